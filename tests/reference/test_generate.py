"""generate(): greedy, sampled, and MTP speculative decoding (which must equal plain greedy)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glm52_plugin.reference.generate import Sampler, generate
from tests.conftest import prompt_ids


def greedy_by_full_recompute(model, ids, n: int) -> list[int]:
    """Independent of the cache: argmax of a full forward over the growing sequence."""
    seq, out = ids, []
    for _ in range(n):
        nxt = model(seq)[:, -1].argmax(-1)
        out.append(int(nxt))
        seq = torch.cat((seq, nxt[:, None]), 1)
    return out


def test_greedy_equals_full_recompute(toy_model) -> None:
    ids = prompt_ids(30, seed=7)
    assert generate(toy_model, ids, 12).tokens[0] == greedy_by_full_recompute(toy_model, ids, 12)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_mtp_speculative_greedy_returns_plain_greedy_tokens(toy_model, k) -> None:
    ids = prompt_ids(40, seed=k)
    plain = generate(toy_model, ids, 32)
    spec = generate(toy_model, ids, 32, mtp_draft_tokens=k)
    assert spec.tokens == plain.tokens
    assert spec.drafted == k * len(spec.rounds)


def test_speculative_accepts_and_rolls_back_correctly(toy_model, monkeypatch) -> None:
    """Steer the draft logits to a known pattern: correct drafts except every third one.
    Acceptance and cache rollback paths both run, whatever the toy's own MTP layer drafts."""
    ids = prompt_ids(40, seed=11)
    plain = generate(toy_model, ids, 30).tokens[0]
    sequence = ids[0].tolist() + plain
    real_mtp = toy_model.mtp
    calls = {"n": 0}

    def steered(hidden, next_ids, start, cache, reuse_topk=None):
        out, topk = real_mtp(hidden, next_ids, start, cache, reuse_topk)
        pos = start + next_ids.shape[1] - 1  # the MTP row at position p drafts token p + 2
        calls["n"] += 1
        target = sequence[pos + 2] if pos + 2 < len(sequence) else 0
        if calls["n"] % 3 == 0:
            target = (target + 1) % toy_model.config.vocab_size
        logits = out.logits.clone()
        logits[:, -1] = torch.nn.functional.one_hot(
            torch.tensor(target), toy_model.config.vocab_size).float()  # fmt: skip
        return type(out)(logits, out.hidden), topk

    monkeypatch.setattr(toy_model, "mtp", steered)
    spec = generate(toy_model, ids, 30, mtp_draft_tokens=3)
    assert spec.tokens[0] == plain
    assert 0 < spec.accepted < spec.drafted
    assert max(spec.rounds) >= 2
    # each round makes 3 MTP calls and every third call drafts wrong: positions 0 and 1 are
    # accepted in every round (but possibly the last, past the known sequence), 2 never
    n = len(spec.rounds)
    assert spec.accepted_per_position[2] == 0
    assert n - 1 <= spec.accepted_per_position[0] == spec.accepted_per_position[1] <= n
    assert spec.acceptance_per_position[2] == 0.0
    assert spec.acceptance_length == 1 + spec.accepted / len(spec.rounds)


@pytest.mark.parametrize("share", [True, False], ids=["index-share", "no-share"])
def test_later_draft_steps_reuse_the_first_pass_last_row(toy_model, share, monkeypatch) -> None:
    """index_share_for_mtp_iteration as vLLM 0.33 / SGLang 0.5.23: draft steps 1+ get the first
    pass's top-k row of its last token as it is (nothing appended); without it each step runs
    the MTP indexer."""
    config = dataclasses.replace(toy_model.config, index_share_for_mtp_iteration=share)
    monkeypatch.setattr(toy_model, "config", config)
    real_mtp, calls = toy_model.mtp, []

    def spy(hidden, next_ids, start, cache, reuse_topk=None):
        out, topk = real_mtp(hidden, next_ids, start, cache, reuse_topk)
        calls.append((reuse_topk, topk))
        return out, topk

    monkeypatch.setattr(toy_model, "mtp", spy)
    generate(toy_model, prompt_ids(40, seed=5), 20, mtp_draft_tokens=3)
    assert len(calls) % 3 == 0
    for first in range(0, len(calls), 3):
        reuse, first_topk = calls[first]
        assert reuse is None
        for reuse, topk in calls[first + 1 : first + 3]:
            if share:
                assert torch.equal(reuse, first_topk[:, -1:])
                assert torch.equal(topk, reuse)  # the MTP layer attended with exactly that
            else:
                assert reuse is None


def test_sampling_is_reproducible_and_respects_stop_ids(toy_model) -> None:
    ids = prompt_ids(20, seed=2)

    def run(seed: int, **kw):
        return generate(
            toy_model, ids, 16, Sampler(0.9, 0.9, torch.Generator().manual_seed(seed)), **kw
        )

    assert run(0).tokens == run(0).tokens
    first = run(0).tokens[0]
    stopped = run(0, stop_ids=(first[3],)).tokens[0]
    assert stopped == first[: first.index(first[3]) + 1]
    spec = run(0, mtp_draft_tokens=2)
    assert all(0 <= t < toy_model.config.vocab_size for t in spec.tokens[0])


def test_top_p_keeps_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = Sampler(1.0, 0.7).probs(logits)
    assert torch.allclose(p, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]]))


def test_batched_greedy_rows_equal_single_rows(toy_model) -> None:
    ids = prompt_ids(24, batch=2, seed=9)
    both = generate(toy_model, ids, 8).tokens
    assert both == [generate(toy_model, ids[i : i + 1], 8).tokens[0] for i in range(2)]


def test_bad_arguments_are_rejected(toy_model) -> None:
    with pytest.raises(ValueError, match="batch size 1"):
        generate(toy_model, prompt_ids(8, batch=2), 4, mtp_draft_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(toy_model, prompt_ids(8), 0)
