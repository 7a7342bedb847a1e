"""The fused / stacked / compiled decode step (reference/compiled.py) against the plain modules."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference.compiled import CompiledDecoder, DecodeStep, StaticCache
from glm52_plugin.reference.generate import generate
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


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_step_eager_equals_plain_modules(toy_model, batch) -> None:
    """DecodeStep (fixed-capacity zero-padded caches, fused GEMMs, stacked experts) computes what
    the plain modules' run() does, for one sequence and for a batch (several tokens routed)."""
    ids = prompt_ids(20, batch=batch, seed=3)
    cache, want_cache = toy_model.new_cache(), toy_model.new_cache()
    tok = toy_model(ids, cache)[:, -1:].argmax(-1)
    toy_model(ids, want_cache)
    static = StaticCache(cache, toy_model.config.num_hidden_layers, 40)
    step = DecodeStep(toy_model)
    for _ in range(6):
        want = toy_model(tok, want_cache)[:, -1]
        with torch.inference_mode():
            out = step(tok, torch.tensor([static.length]), static.kv, static.index_k)[:, -1]
        static.length += 1
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
        tok = want.argmax(-1, keepdim=True)


def test_decode_step_refresh_follows_changed_weights(toy_models) -> None:
    """The fused copies are snapshots: refresh() brings them up to date in place."""
    model = toy_models[2]
    step = DecodeStep(model)
    w = model.model.layers[1].mlp.experts[0].up_proj.weight
    fused = step.weights[1]["experts_gate_up"]
    before = fused.clone()
    with torch.no_grad():
        w.mul_(2)
    try:
        step.refresh()
        inter = w.shape[0]
        torch.testing.assert_close(fused[0, inter:], w, rtol=0, atol=0)
        assert not torch.equal(fused, before)
    finally:
        with torch.no_grad():
            w.div_(2)


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

    monkeypatch.delitem(model.__dict__, "_compiled_decode", raising=False)
    monkeypatch.setattr(torch, "compile", broken)
    ids = prompt_ids(16, seed=9)
    with pytest.warns(UserWarning, match="running it eagerly"):
        result = generate(model, ids, 8, compile=True)
    assert not result.compiled
    assert result.tokens == generate(model, ids, 8).tokens


def test_model_of_inference_tensors_decodes_eagerly_and_compiled(toy_checkpoints) -> None:
    """Weights created under inference_mode (no version counter) work in the plain modules and
    in the decode step, which takes no data_ptr/_version keys."""
    from glm52_plugin.reference import Glm52ForCausalLM

    with torch.inference_mode():
        model = Glm52ForCausalLM.from_pretrained(
            toy_checkpoints[2], dtype=torch.float32, progress=False
        )
    assert model.lm_head.weight.is_inference()
    ids = prompt_ids(12, seed=4)
    want = generate(model, ids, 6)
    step = DecodeStep(model)
    step.refresh()
    compiled = generate(model, ids, 6, compile=True)
    assert compiled.compiled
    assert compiled.tokens == want.tokens


def test_decode_step_is_rebuilt_for_another_dtype(toy_models) -> None:
    """A model moved to another dtype (or device) after compiling gets new fused copies."""
    model = toy_models[2]
    step = DecodeStep(model)
    assert step.matches(model.lm_head.weight)
    assert not step.matches(model.lm_head.weight.double())
