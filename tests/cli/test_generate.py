"""``glm52 generate`` checks every option before loading anything, refuses prompts past the
model's positions and checkpoints past the machine's memory, and says when weights are random."""

from __future__ import annotations

import json

import torch

from glm52_plugin.cli.generate import TOY_NOTE
from glm52_plugin.cli.main import main
from glm52_plugin.reference import Glm52ForCausalLM
from glm52_plugin.reference.footprint import weight_bytes_in_memory
from tests.cli.helpers import assert_one_error, glm52


def test_every_invalid_option_is_one_usage_error():
    # the report's crash (--mtp -2: IndexError) and silent accepts, in one command line
    result = glm52(
        "generate", "--mtp", "-2", "--temperature", "-1", "--top-p", "2", "--prompt", " ",
        "--max-new-tokens", "0",
    )  # fmt: skip
    message = assert_one_error(result, "generate", 2)
    for reason in (
        "--mtp must be >= 0 draft tokens (got -2)",
        "--temperature must be a finite number >= 0 (got -1.0)",
        "--top-p must be in (0, 1] (got 2.0)",
        "--prompt is empty",
        "--max-new-tokens must be >= 1 (got 0)",
    ):
        assert reason in message
    assert result.stdout == ""


def test_toy_options_with_model_are_a_usage_error(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--layers", "8"]) == 2
    assert "--layers choose the built-in toy" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path), "--nvfp4"]) == 2
    assert "--nvfp4 choose the built-in toy" in capsys.readouterr().err
    assert main(["generate", "--top-p", "0"]) == 2
    assert "--top-p must be in (0, 1] (got 0.0)" in capsys.readouterr().err


def test_prompt_longer_than_the_positions_is_refused(toy_checkpoints, capsys):
    path = toy_checkpoints[2]
    positions = json.loads((path / "config.json").read_text())["max_position_embeddings"]
    prompt = "sky " * (2 * positions)  # byte-level BPE: at least one token per word
    assert main(["generate", "--model", str(path), "--prompt", prompt]) == 1
    err = capsys.readouterr().err
    assert f"exceeds the {positions:,} positions" in err
    assert "max_position_embeddings" in err
    assert "loading shards" not in err  # refused before the weights load


def test_checkpoint_larger_than_memory_is_refused_with_the_estimate(toy_checkpoints, capsys):
    path = toy_checkpoints[8]
    assert main(["generate", "--model", str(path), "--max-memory-gb", "0.001"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"glm52 generate: error: {path}: loading its weights needs about ")
    assert "glm52_plugin.reference.stream_logits" in err
    assert "glm52 verify" in err
    assert "loading shards" not in err


def test_memory_estimate_matches_the_loaded_model(toy_models, toy_checkpoints):
    # the estimate comes from safetensors headers; the loaded float32 model is the independent count
    for layers, model in toy_models.items():
        loaded = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        estimate = weight_bytes_in_memory(toy_checkpoints[layers], 4)
        assert abs(estimate - loaded) / loaded < 0.05, (layers, estimate, loaded)
        assert model.lm_head.weight.dtype == torch.float32


def test_memory_estimate_of_nvfp4_packed_or_not(toy_nvfp4_checkpoints):
    path = toy_nvfp4_checkpoints[2]
    for packed in (False, True):
        model = Glm52ForCausalLM.from_pretrained(
            path, dtype=torch.float32, progress=False, packed_experts=packed
        )
        loaded = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        estimate = weight_bytes_in_memory(path, 4, packed)
        assert abs(estimate - loaded) / loaded < 0.05, (packed, estimate, loaded)


def test_a_toy_says_its_weights_are_random(toy_checkpoints, capsys):
    args = ["generate", "--model", str(toy_checkpoints[2]), "--max-new-tokens", "2", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count(TOY_NOTE) == 1
    assert len(json.loads(captured.out)["tokens"]) == 2
