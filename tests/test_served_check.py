"""served_check: engine tokens teacher-forced through the reference model."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference.generate import generate
from glm52_plugin.served_check import check_tokens
from tests.conftest import prompt_ids


def test_reference_greedy_tokens_pass_with_zero_gap(toy_model) -> None:
    # generate() decodes incrementally with the cache; check_tokens recomputes in one forward
    prompt = prompt_ids(40)
    tokens = generate(toy_model, prompt, 12).tokens[0]
    result = check_tokens(toy_model, prompt[0].tolist(), tokens)
    assert result.ok
    assert result.exact == len(tokens) == 12
    assert max(result.gaps) < 1e-6


def test_a_wrong_token_fails_at_its_step_with_the_logprob_gap(toy_model) -> None:
    prompt = prompt_ids(40)[0].tolist()
    tokens = generate(toy_model, torch.tensor([prompt]), 6).tokens[0]
    logp = toy_model(torch.tensor([prompt + tokens[:3]]))[0, -1].log_softmax(-1)
    worst = int(logp.argmin())
    bad = [*tokens[:3], worst]
    result = check_tokens(toy_model, prompt, bad, tolerance=0.5)
    assert result.failures == [3]
    assert result.gaps[3] == pytest.approx(float(logp.max() - logp[worst]), abs=1e-4)
    assert "FAIL" in result.summary()


def test_out_of_vocabulary_ids_are_refused(toy_model) -> None:
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        check_tokens(toy_model, [1, 2, 3], [10**6])
    with pytest.raises(ValueError, match="non-empty prompt"):
        check_tokens(toy_model, [], [1])
