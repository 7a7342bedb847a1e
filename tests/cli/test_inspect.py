"""``glm52 inspect`` reports exactly what the writer wrote (recounted here from the tensors)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from glm52_plugin.cli.main import main
from tests.checkpoint.conftest import (  # noqa: F401
    copy_toy,
    edit_tensors,
    nvfp4_toys,
)
from tests.cli.helpers import glm52


def _recount(path):
    """Count tensors, bytes, params and uint8 linears by loading every tensor."""
    tensors = bytes_ = params = nvfp4 = 0
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, framework="pt") as s:
            for k in s.keys():  # noqa: SIM118
                t = s.get_tensor(k)
                tensors += 1
                bytes_ += t.numel() * t.element_size()
                if t.dtype == torch.uint8:
                    nvfp4 += 1
                    params += 2 * t.numel()
                elif not k.endswith(("weight_scale", "weight_scale_2", "input_scale")):
                    params += t.numel()
    return tensors, bytes_, params, nvfp4


@pytest.mark.parametrize("layers", [2, 8])
def test_inspect_nvfp4_toy(capsys, nvfp4_toys, layers):  # noqa: F811
    path = nvfp4_toys[layers]
    assert main(["inspect", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["tensors"], s["total_bytes"], s["total_params"], s["nvfp4_linears"]) == _recount(path)
    assert s["errors"] == []
    assert s["indexshare"]["agrees"]
    full = {2: [0], 8: [0, 1, 2, 6]}[layers]  # toy schedules: freq 4, offset 3 for 8 layers
    assert s["indexshare"]["full_layers"] == full
    assert s["indexshare"]["indexer_tensors_on_layers"] == [*full, layers]
    assert set(s["precision"]["routed experts"]) == {"NVFP4"}
    assert set(s["precision"]["attention (MLA)"]) == {"BF16"}
    assert s["quantization"]["algo"] == "NVFP4"


def test_inspect_bf16_toy_table(capsys, toy_checkpoints):
    assert main(["inspect", str(toy_checkpoints[8])]) == 0
    out = capsys.readouterr().out
    assert "quantization: none (BF16)" in out
    assert "indexer tensors agree" in out


def test_inspect_flags_extra_indexer_and_errors(capsys, copy_toy):  # noqa: F811
    path = copy_toy(8)

    def add(t):
        if "model.layers.2.self_attn.indexer.wk.weight" in t:
            t["model.layers.3.self_attn.indexer.wk.weight"] = t[
                "model.layers.2.self_attn.indexer.wk.weight"
            ].clone()

    edit_tensors(path, add)
    assert main(["inspect", str(path), "--json"]) == 0  # a warning, not an error
    s = json.loads(capsys.readouterr().out)
    assert s["indexshare"]["extra"] == [3]
    assert any("shared IndexShare layer 3" in w for w in s["warnings"])

    edit_tensors(path, lambda t: t.pop("model.norm.weight", None))
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    assert "model.norm.weight: missing" in captured.out
    assert (
        captured.err == f"glm52 inspect: error: {path}: 1 error in the checkpoint (listed above)\n"
    )


def test_inspect_truncated_exits_nonzero(capsys, copy_toy):  # noqa: F811
    path = copy_toy(2)
    shard = sorted(path.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("glm52 inspect: error: ")
    assert "truncated" in captured.err


def test_repeated_findings_are_one_line_with_three_examples(capsys, copy_toy):  # noqa: F811
    # A checkpoint saved in float16: every BF16 tensor says "dtype F16, expected BF16" (float32,
    # what transformers writes for some modules, is accepted as a lossless widening).
    path = copy_toy(2)

    def to_f16(t):
        for name, value in t.items():
            if value.dtype == torch.bfloat16:
                t[name] = value.half()

    edit_tensors(path, to_f16)
    assert main(["inspect", str(path), "--json"]) in (0, 1)
    s = json.loads(capsys.readouterr().out)
    f16 = [w for w in s["warnings"] + s["errors"] if w.endswith("dtype F16, expected BF16")]
    assert len(f16) > 20
    assert main(["inspect", str(path)]) in (0, 1)
    lines = [line for line in capsys.readouterr().out.splitlines() if "F16, expected BF16:" in line]
    assert len(lines) == 1
    assert f"{len(f16)} times, e.g. " in lines[0]
    assert lines[0].count(".safetensors") == 3  # three examples, "file: tensor" each
    assert "(--verbose lists all)" in lines[0]
    assert main(["inspect", str(path), "--verbose"]) in (0, 1)
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.endswith("dtype F16, expected BF16")
    ]
    assert len(lines) == len(f16)


def test_a_checkpoint_without_mtp_is_one_warning_and_exit_0(toy_checkpoints, tmp_path):
    path = tmp_path / "no-mtp"
    shutil.copytree(toy_checkpoints[2], path)
    mtp = json.loads((path / "config.json").read_text())["num_hidden_layers"]
    edit_tensors(
        path, lambda t: [t.pop(n) for n in list(t) if n.startswith(f"model.layers.{mtp}.")]
    )
    result = glm52("inspect", str(path))
    assert result.returncode == 0, result.stderr
    findings = [
        line for line in result.stdout.splitlines() if line.startswith(("warning", "error"))
    ]
    assert len(findings) == 1, findings
    assert "MTP" in findings[0]
    assert result.stderr == ""


def test_findings_differing_only_in_layer_indices_are_one_kind() -> None:
    from glm52_plugin.checkpoint.validate import Issue
    from glm52_plugin.cli.inspect import group_findings

    issues = [
        Issue(
            "error", f"s{i}.safetensors", f"NVFP4 weight lacks model.layers.{i}.mlp.experts.{i}.w"
        )
        for i in (3, 4, 5, 6)
    ] + [
        Issue("error", "a", "shape [2, 3], expected [4]"),
        Issue("error", "b", "shape [5, 3], expected [4]"),
    ]
    groups = group_findings(issues)
    assert [g["count"] for g in groups] == [4, 1, 1]  # different shapes stay different findings
    assert groups[0]["message"] == "NVFP4 weight lacks model.layers.#.mlp.experts.#.w"
    assert groups[0]["lines"] == [str(i) for i in issues[:4]]  # what --verbose prints, in full
