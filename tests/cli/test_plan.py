"""``glm52 plan`` as a user meets it: output, impossible set-ups, GPU names, KV-cache defaults."""

from __future__ import annotations

import json

import pytest

from glm52_plugin.cli.main import main
from tests.cli.helpers import assert_one_error, glm52

EXPERT = 3 * 2048 * 6144  # one routed expert's gate, up and down weights
KV_BF16_PER_TOKEN = 79 * 1152 + 22 * 132  # latent on 78 + MTP layers, indexer keys on 21 + MTP


def _plan_json(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["plan", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_plan_json_b200(capsys):
    code, r, _ = _plan_json(capsys, "--gpu", "B200", "--tp", "8", "--kv-dtype", "bf16")
    assert code == 0
    assert r["params"]["total"] == pytest.approx(753.33e9, abs=0.01e9)
    assert r["kv_bytes_per_token"] == KV_BF16_PER_TOKEN
    budget = 180e9 * 0.9 - r["weight_bytes_per_gpu"]
    assert r["tokens_fit_per_gpu"] == int(budget // r["kv_bytes_per_token"])
    assert r["flops_per_token"]["published_ratio"] == 2.9


def test_plan_table_and_chart(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    png = tmp_path / "plan.png"
    assert (
        main(["plan", "--gpu", "H100", "--tp", "8", "--context", "8192", "--chart", str(png)]) == 0
    )
    out = capsys.readouterr().out
    assert "753.33 B" in out
    assert "2.9x" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_from_checkpoint(capsys, toy_checkpoints):
    code, r, _ = _plan_json(capsys, "--checkpoint", str(toy_checkpoints[2]), "--tp", "1")
    assert code == 0
    assert r["precision"] == "bf16"
    assert r["params"]["main"] + r["params"]["mtp"] == pytest.approx(2.29e6 + 1.25e6, rel=0.01)


def test_impossible_set_up_lists_every_reason_in_one_error():
    # a fresh process, as typed: an invalid value (exit 2) and two splits that do not divide
    result = glm52("plan", "--gpu", "h200", "--tp", "3", "--gpu-util", "1.5")
    message = assert_one_error(result, "plan", 2)
    assert "--gpu-util must be in (0, 1] (got 1.5)" in message
    assert "64 attention heads do not split over TP 3" in message
    assert "expert width 2048 does not split over TP 3" in message
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "reasons"),
    [
        (["--tp", "3"], 1, ["64 attention heads do not split over TP 3"]),
        (
            ["--tp", "3", "--ep", "3"],
            1,
            ["heads do not", "256 routed experts do not split over EP 3"],
        ),
        (["--tp", "8", "--ep", "4"], 1, ["--ep must be 1"]),
        (["--gpu-util", "0"], 2, ["--gpu-util must be in (0, 1] (got 0.0)"]),
        (
            ["--tp", "0", "--gpu-util", "-1"],
            2,
            ["--tp must be >= 1", "--gpu-util must be in (0, 1]"],
        ),
    ],
)
def test_impossible_layouts_exit_non_zero(capsys, args, code, reasons):
    # invalid values are usage errors (2); layouts the model cannot split are failures (1)
    assert main(["plan", *args]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("glm52 plan: error: impossible set-up")
    for reason in reasons:
        assert reason in captured.err


def test_weights_that_do_not_fit_one_gpu(capsys):
    # 8 x H100 hold the NVFP4 checkpoint, one H100 cannot: the routed experts alone are
    # 75 layers x 256 experts x 4.5 bits per weight, about 255 GB.
    assert 75 * 256 * EXPERT * 0.5625 > 80e9
    code = main(["plan", "--gpu", "H100", "--tp", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "weights do not fit" in captured.err
    assert "KV budget" in captured.err
    assert "<= 0" in captured.err
    assert "weights per GPU" in captured.out  # the numbers still show how far off it is


@pytest.mark.parametrize("name", ["h200", "H200", "b200", "gb200", "rtx pro 6000", "RTX-PRO-6000"])
def test_gpu_names_are_case_insensitive(capsys, name):
    code, r, _ = _plan_json(capsys, "--gpu", name, "--context", "65536")
    assert code == 0
    assert r["gpu"].casefold().replace(" ", "") == name.casefold().replace("-", "").replace(" ", "")


def test_unknown_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--gpu", "A100"])
    assert e.value.code == 2
    assert "glm52 plan: error: argument --gpu: unknown GPU 'A100'" in capsys.readouterr().err


# What each engine picks for GLM-5.2 with --kv-cache-dtype auto, read in its source:
# vLLM 0.33 vllm/model_executor/models/config.py GlmMoeDsaForCausalLM.verify_and_update_config
# (fp8_e4m3 on the SM10x family only) + vllm/platforms/cuda.py (FlashInfer sparse MLA first for
# fp8 on SM10x: raw 576 B rows); SGLang 0.5.23 sglang/srt/arg_groups/overrides.py
# _dsa_kv_cache_dtype_default (fp8_e4m3 on SM >= 10, bfloat16 on SM90) and
# _dsa_split_backend_resolution + mem_cache/kv_cache_configurator.py (trtllm: raw 576 B rows;
# GLM on SM12x: flashinfer_sparse_mla with the 656 B scaled layout).
ENGINE_DEFAULTS = [
    ("vllm", "B200", "fp8", 576),
    ("vllm", "B300", "fp8", 576),
    ("vllm", "GB200", "fp8", 576),
    ("vllm", "H100", "bf16", 1152),
    ("vllm", "H200", "bf16", 1152),
    ("vllm", "RTX PRO 6000", "bf16", 1152),
    ("sglang", "B200", "fp8", 576),
    ("sglang", "B300", "fp8", 576),
    ("sglang", "H200", "bf16", 1152),
    ("sglang", "RTX PRO 6000", "fp8_ds_mla", 512 + 512 // 128 * 4 + 64 * 2),
]


@pytest.mark.parametrize(("engine", "gpu", "kv_dtype", "latent_bytes"), ENGINE_DEFAULTS)
def test_kv_dtype_default_follows_the_engine(capsys, engine, gpu, kv_dtype, latent_bytes):
    _, r, _ = _plan_json(capsys, "--engine", engine, "--gpu", gpu, "--tp", "8", "--context", "4096")
    assert r["kv_dtype"] == kv_dtype
    assert r["kv_bytes_per_token"] == 79 * latent_bytes + 22 * 132
    assert r["engine"] == engine


def test_bf16_kv_does_not_hold_1m_context_on_8_h200():
    # Hand check: 1M tokens of bf16 KV need 98.5 GB per GPU (MLA's latent is replicated on every
    # TP rank); 141 GB x 0.9 minus the routed experts' eighth alone (~51 GB) leaves < 76 GB.
    need = (1 << 20) * KV_BF16_PER_TOKEN
    assert need > 141e9 * 0.9 - 75 * 256 * EXPERT * 0.5625 / 8
    result = glm52("plan", "--gpu", "h200", "--kv-dtype", "bf16")  # the engines' Hopper default
    message = assert_one_error(result, "plan", 1)
    assert "KV cache does not fit: batch 1 x 1,048,576 tokens needs 98.5 GB per GPU" in message
    assert "does NOT fit" in result.stdout
    # 128k x 4 sequences do fit: the same GPUs, a context the budget holds
    ok = glm52("plan", "--gpu", "h200", "--context", "131072", "--batch", "4")
    assert ok.returncode == 0, ok.stderr
    assert "batch 4 fits" in ok.stdout
    assert "bf16" in ok.stdout
