"""The compiled decode step (generate(compile=True)) against the eager reference on the toys."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference import generate as gen
from glm52_plugin.reference.cache import StaticCache
from glm52_plugin.reference.generate import CompiledDecoder, generate
from tests.conftest import prompt_ids


def eager_steps(model, ids, n: int) -> tuple[list[int], list[torch.Tensor]]:
    cache = model.new_cache()
    tok = model(ids, cache)[:, -1:].argmax(-1)
    toks, logits = [int(tok)], []
    for _ in range(n):
        out = model(tok, cache)[:, -1]
        logits.append(out)
        tok = out.argmax(-1, keepdim=True)
        toks.append(int(tok))
    return toks, logits


def test_static_step_eager_equals_run(toy_model) -> None:
    """decode_static (fixed-capacity, zero-padded caches) is the same computation as run()."""
    ids = prompt_ids(20, seed=3)
    want_toks, want_logits = eager_steps(toy_model, ids, 6)
    cache = toy_model.new_cache()
    tok = toy_model(ids, cache)[:, -1:].argmax(-1)
    static = StaticCache(cache, toy_model.config.num_hidden_layers, 40)
    toks = [int(tok)]
    for want in want_logits:
        with torch.inference_mode():
            pos = torch.tensor([static.length])
            out = toy_model.decode_static(tok, pos, static.kv, static.index_k)[:, -1]
        static.length += 1
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
        tok = out.argmax(-1, keepdim=True)
        toks.append(int(tok))
    assert toks == want_toks


def test_compiled_greedy_equals_eager(toy_models) -> None:
    """One compile (2-layer toy): tokens identical, logits equal to fp32 rounding."""
    model = toy_models[2]
    ids = prompt_ids(24, seed=5)
    want_toks, want_logits = eager_steps(model, ids, 10)
    cache = model.new_cache()
    tok = model(ids, cache)[:, -1:].argmax(-1)
    decoder = CompiledDecoder(model, cache, 24 + 12)
    assert decoder.compiled, "torch.compile fell back to eager"
    assert decoder.compile_seconds > 0
    toks = [int(tok)]
    for want in want_logits:
        out = decoder.step(tok)[:, -1]
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
        tok = out.argmax(-1, keepdim=True)
        toks.append(int(tok))
    assert toks == want_toks
    # through generate(), reusing the compiled graph at another capacity (dynamic dimension)
    result = generate(model, ids, 16, compile=True)
    assert result.compiled
    assert result.tokens[0][:11] == want_toks
    assert result.tokens == generate(model, ids, 16).tokens


def test_compile_failure_falls_back_to_eager(toy_models, monkeypatch) -> None:
    model = toy_models[2]

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler")

        return run

    monkeypatch.setattr(gen, "_COMPILED", type(gen._COMPILED)())
    monkeypatch.setattr(torch, "compile", broken)
    ids = prompt_ids(16, seed=9)
    with pytest.warns(UserWarning, match="running it eagerly"):
        result = generate(model, ids, 8, compile=True)
    assert not result.compiled
    assert result.tokens == generate(model, ids, 8).tokens
