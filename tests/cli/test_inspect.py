"""``glm52 inspect`` reports exactly what the writer wrote (recounted here from the tensors)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from glm52_plugin.cli.main import main
from tests.checkpoint.conftest import (  # noqa: F401
    copy_toy,
    edit_tensors,
    nvfp4_toys,
)


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
    full = {2: [0], 8: [0, 1, 2, 6]}[layers]  # spec 16.1 / 16.2
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
    assert "model.norm.weight: missing" in capsys.readouterr().out


def test_inspect_truncated_exits_nonzero(capsys, copy_toy):  # noqa: F811
    path = copy_toy(2)
    shard = sorted(path.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["inspect", str(path)]) == 1
    assert "truncated" in capsys.readouterr().out
