"""The toys' fitted MTP layers draft what the main model then says (issue: MTP that accepts).

Acceptance is measured on prompts the fit never saw (it fits on its own seeded sequences), and
the per-position counts of ``generate`` are recomputed here from the drafts themselves against
plain greedy decoding, independently of generate's accept/reject code.
"""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference.generate import generate
from tests.conftest import prompt_ids

K = 3
GOAL = 0.6  # overall acceptance with 3 drafts, the goal


def recorded_drafts(model, monkeypatch) -> list[list[tuple[int, int]]]:
    """Wrap model.mtp: per verification round, (sequence position drafted, greedy draft)."""
    rounds: list[list[tuple[int, int]]] = []
    real = model.mtp

    def mtp(hidden, next_ids, start, cache, reuse_topk=None):
        out, topk = real(hidden, next_ids, start, cache, reuse_topk)
        if reuse_topk is None:  # the first draft step of a round
            rounds.append([])
        # the MTP row at position p drafts the token at p + 2
        rounds[-1].append((start + next_ids.shape[1] + 1, int(out.logits[0, -1].argmax())))
        return out, topk

    monkeypatch.setattr(model, "mtp", mtp)
    return rounds


def acceptance(model, monkeypatch, seeds=(101, 102, 103), new=40) -> tuple[float, list[float]]:
    drafted = accepted = 0
    per_pos = [0] * K
    for seed in seeds:
        ids = prompt_ids(40, seed=seed)
        # K + 1 more: the last round may verify drafts past the tokens it emits
        longer = generate(model, ids, new + K + 1).tokens[0]
        plain, sequence = longer[:new], ids[0].tolist() + longer
        rounds = recorded_drafts(model, monkeypatch)
        spec = generate(model, ids, new, mtp_draft_tokens=K)
        monkeypatch.undo()
        assert spec.tokens[0] == plain
        assert len(rounds) == len(spec.rounds)
        assert all(len(r) == K for r in rounds)
        # independent count: a draft is accepted iff it and every earlier draft of its round
        # equal plain greedy decoding at their positions
        mine = [0] * K
        for drafts in rounds:
            for j, (pos, tok) in enumerate(drafts):
                if sequence[pos] != tok:
                    break
                mine[j] += 1
        assert spec.accepted_per_position == mine
        n = len(spec.rounds)
        assert spec.acceptance_per_position == [a / n for a in mine]
        assert spec.acceptance_length == pytest.approx(1 + sum(mine) / n)
        drafted += spec.drafted
        accepted += spec.accepted
        per_pos = [a + b for a, b in zip(per_pos, mine, strict=True)]
    return accepted / drafted, per_pos


def test_fitted_mtp_accepts_on_held_out_prompts(toy_model, monkeypatch) -> None:
    rate, per_pos = acceptance(toy_model, monkeypatch)
    assert rate >= GOAL, f"acceptance {rate:.2f}, accepted per position {per_pos}"
    assert per_pos[0] >= per_pos[1] >= per_pos[2] > 0


@pytest.mark.parametrize("layers", [2, 8])
def test_fitted_mtp_accepts_on_the_nvfp4_toy(toy_nvfp4_checkpoints, layers, monkeypatch) -> None:
    """The NVFP4 toy reuses the BF16 toy's fit; its quantized experts must not break the drafts."""
    from glm52_plugin.reference import Glm52ForCausalLM

    model = Glm52ForCausalLM.from_pretrained(
        toy_nvfp4_checkpoints[layers], dtype=torch.float32, progress=False
    )
    rate, per_pos = acceptance(model, monkeypatch, seeds=(104, 105))
    assert rate >= GOAL, f"acceptance {rate:.2f}, accepted per position {per_pos}"


def test_an_unfitted_mtp_layer_accepts_rarely(toy_model, monkeypatch) -> None:
    """The control: the same toy with its MTP layer's input projection re-randomised."""
    mtp = toy_model.model.layers[toy_model.config.num_hidden_layers]
    saved = mtp.eh_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            mtp.eh_proj.weight.copy_(torch.randn(saved.shape, generator=g) * saved.shape[1] ** -0.5)
        rate, _ = acceptance(toy_model, monkeypatch, seeds=(101,))
    finally:
        with torch.no_grad():
            mtp.eh_proj.weight.copy_(saved)
    assert rate < 0.3
