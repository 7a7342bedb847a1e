"""served_check: engine tokens teacher-forced through the reference model."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference.footprint import weight_bytes_in_memory
from glm52_plugin.reference.generate import generate
from glm52_plugin.served_check import (
    Reference,
    build_prompts,
    check_tokens,
)
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


def test_prompts_are_deterministic_plain_text_of_the_exact_length(toy_checkpoints) -> None:
    from tokenizers import Tokenizer

    from glm52_plugin.presets import TOY_BASE_VOCAB

    tokenizer_file = toy_checkpoints[2] / "tokenizer.json"
    prompts = build_prompts(tokenizer_file, 3, 100)
    assert [len(p) for p in prompts] == [100, 100, 100]
    assert len({tuple(p) for p in prompts}) == 3
    assert build_prompts(tokenizer_file, 3, 100) == prompts
    # ordinary text tokens only: the toy's special tokens start at TOY_BASE_VOCAB
    assert max(max(p) for p in prompts) < TOY_BASE_VOCAB
    text = Tokenizer.from_file(str(tokenizer_file)).decode(prompts[0])
    assert text.startswith("[0] ")
    assert "(note " in text


def test_fp32_estimate_counts_the_loaded_models_parameters(toy_nvfp4_checkpoints) -> None:
    from glm52_plugin.reference import Glm52ForCausalLM

    path = toy_nvfp4_checkpoints[2]
    model = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    loaded = sum(4 * t.numel() for t in model.state_dict().values())
    assert weight_bytes_in_memory(path, 4) == loaded


def test_streamed_and_in_memory_reference_agree_on_ragged_batches(toy_nvfp4_checkpoints) -> None:
    pytest.importorskip(
        "glm52_plugin.reference.stream", reason="stream_logits is not in this build"
    )
    path = toy_nvfp4_checkpoints[2]
    prompt = prompt_ids(40)[0].tolist()
    # different lengths: the streamed batch is right-padded, which must not change any row
    sequences = [[*prompt, 5, 6, 7], [*prompt[:30], 9]]
    memory = Reference(path, mode="memory", progress=False)
    stream = Reference(path, mode="stream", progress=False)
    assert memory.mode == "memory"
    assert stream.mode == "stream"
    for a, b in zip(memory.logits(sequences, 20), stream.logits(sequences, 20), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_auto_mode_streams_when_the_model_does_not_fit(toy_checkpoints) -> None:
    path = toy_checkpoints[2]
    needed = weight_bytes_in_memory(path, 4) / 1e9
    assert Reference(path, max_memory_gb=10 * needed).mode == "memory"
    assert Reference(path, max_memory_gb=needed).mode == "stream"


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_nvfp4_activations_reach_the_reference(toy_nvfp4_checkpoints, mode) -> None:
    from glm52_plugin.reference import Glm52ForCausalLM

    path = toy_nvfp4_checkpoints[2]
    w4a4 = Glm52ForCausalLM.from_pretrained(
        path, dtype=torch.float32, progress=False, activations="nvfp4"
    )
    sequence = prompt_ids(40)[0].tolist()
    expected = w4a4(torch.tensor([sequence]))[0, 10:]
    (got,) = Reference(path, "nvfp4", mode=mode, progress=False).logits([sequence], 10)
    (w4a16,) = Reference(path, "bf16", mode=mode, progress=False).logits([sequence], 10)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (w4a16 - expected).abs().max() > 1e-3  # the FP4 rounding of activations is visible
