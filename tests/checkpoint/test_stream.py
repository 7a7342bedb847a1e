"""The one checkpoint reader: NVFP4 parts grouped and checked once, layer subsets, one home per fact."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from glm52_plugin.checkpoint import Checkpoint, CheckpointError
from glm52_plugin.checkpoint.names import FP32_TENSORS, is_shared_indexer, keeps_fp32
from glm52_plugin.checkpoint.reader import group_nvfp4
from glm52_plugin.config import Glm52Config
from glm52_plugin.nvfp4 import PackedWeight
from tests.checkpoint.conftest import copy_indexer_to_shared_layer, edit_tensors


def _raw(path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return out


def test_stream_yields_each_nvfp4_linear_once_with_its_own_parts(nvfp4_toys) -> None:
    path = nvfp4_toys[2]
    raw = _raw(path)
    items = list(Checkpoint.open(path).stream(dtype=None, progress=False))
    names = [n for n, _ in items]
    assert len(names) == len(set(names))
    packed = {n: t for n, t in items if isinstance(t, PackedWeight)}
    # every uint8 tensor of the files is one NVFP4 linear, and nothing else is grouped
    assert set(packed) == {n for n, t in raw.items() if t.dtype == torch.uint8}
    for name, w in packed.items():
        m = name.removesuffix(".weight")
        assert torch.equal(w.packed, raw[name])
        assert torch.equal(
            w.weight_scale.view(torch.uint8), raw[f"{m}.weight_scale"].view(torch.uint8)
        )
        assert torch.equal(w.weight_scale_2, raw[f"{m}.weight_scale_2"].reshape(()))
    plain = {n for n, t in items if not isinstance(t, PackedWeight)}
    side = (".weight_scale", ".weight_scale_2", ".input_scale")
    assert plain == {n for n, t in raw.items() if t.dtype != torch.uint8 and not n.endswith(side)}


def test_stream_of_one_layer_reads_only_that_layer(nvfp4_toys) -> None:
    ckpt = Checkpoint.open(nvfp4_toys[2])
    names = ckpt.layer_tensors(1)
    assert names
    assert all(n.startswith("model.layers.1.") for n in names)
    items = dict(ckpt.stream(torch.float32, progress=False, names=names))
    assert all(n.startswith("model.layers.1.") for n in items)
    assert any(n.endswith("experts.0.up_proj.weight") for n in items)  # dequantised
    up = items["model.layers.1.mlp.experts.0.up_proj.weight"]
    assert up.dtype == torch.float32
    assert up.shape == (64, 256)


def test_a_name_the_checkpoint_lacks_is_named(nvfp4_toys) -> None:
    ckpt = Checkpoint.open(nvfp4_toys[2])
    with pytest.raises(CheckpointError, match=r"no tensor model\.layers\.1\.nope\.weight"):
        list(ckpt.stream(progress=False, names=["model.layers.1.nope.weight"]))


def test_a_subset_with_half_an_nvfp4_linear_is_an_error(nvfp4_toys) -> None:
    ckpt = Checkpoint.open(nvfp4_toys[2])
    m = "model.layers.1.mlp.experts.0.up_proj"
    with pytest.raises(CheckpointError, match=rf"{m}\.weight: NVFP4 linear lacks \['weight_scale'"):
        list(ckpt.stream(progress=False, names=[f"{m}.weight"]))


def test_grouping_without_headers_drops_a_late_input_scale_and_names_the_incomplete() -> None:
    packed = torch.zeros(2, 8, dtype=torch.uint8)
    scale = torch.ones(2, 1).to(torch.float8_e4m3fn)
    m = "model.layers.1.mlp.experts.0.up_proj"
    pairs = [(f"{m}.weight", packed), (f"{m}.weight_scale", scale),
             (f"{m}.weight_scale_2", torch.tensor(1.0)), (f"{m}.input_scale", torch.tensor(1.0)),
             ("model.norm.weight", torch.ones(4))]  # fmt: skip
    out = list(group_nvfp4(pairs))
    assert [n for n, _ in out] == [f"{m}.weight", "model.norm.weight"]
    assert isinstance(out[0][1], PackedWeight)
    with pytest.raises(CheckpointError, match=r"lacks \['weight_scale_2'\] \(1 NVFP4"):
        list(group_nvfp4(pairs[:2]))
    bad = [*pairs[:2], (f"{m}.weight_scale_2", torch.tensor(float("nan")))]
    with pytest.raises(CheckpointError, match="weight_scale_2: nan is not a finite positive"):
        list(group_nvfp4(bad))


def test_shared_indexer_predicate_is_the_one_every_reader_applies(copy_toy) -> None:
    path = copy_toy(2)
    edit_tensors(path, copy_indexer_to_shared_layer)
    ckpt = Checkpoint.open(path)
    cfg = ckpt.config
    shared = {n for n in ckpt.tensors if is_shared_indexer(n, cfg)}
    assert shared
    assert all(n.startswith("model.layers.1.self_attn.indexer.") for n in shared)
    # not the full layer's, not the MTP layer's (which always builds an indexer)
    assert not any(n.startswith(("model.layers.0.", "model.layers.2.")) for n in shared)
    assert set(ckpt.check().ignored) == shared
    assert not shared & set(ckpt.loadable())


def test_fp32_list_is_transformers_keep_in_fp32(toy_checkpoints) -> None:
    """The reference keeps in fp32 exactly what transformers' glm_moe_dsa model keeps in fp32."""
    modeling = pytest.importorskip("transformers.models.glm_moe_dsa.modeling_glm_moe_dsa")
    from glm52_plugin.reference import Glm52ForCausalLM

    pre = modeling.GlmMoeDsaPreTrainedModel
    keep = [*pre._keep_in_fp32_modules, *(pre._keep_in_fp32_modules_strict or [])]
    model = Glm52ForCausalLM.from_pretrained(toy_checkpoints[2], torch.bfloat16, progress=False)
    state = model.state_dict()
    fp32 = {n for n, t in state.items() if t.dtype == torch.float32}
    assert fp32 == {n for n in state if any(k in n for k in keep)}
    assert fp32 == {n for n in state if keeps_fp32(n)}
    assert all(any(n.endswith(s) for n in fp32) for s in FP32_TENSORS)


def test_checkpoint_package_does_not_import_the_model() -> None:
    code = (
        "import sys, glm52_plugin.checkpoint, glm52_plugin.checkpoint.preload; "
        "print(sorted(m for m in sys.modules if m.startswith('glm52_plugin.reference')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_glm52_config_parts_grouping_matches_headers_only_validation(nvfp4_toys) -> None:
    """validate() (headers) and the reader (tensors) group the same NVFP4 modules."""
    ckpt = Checkpoint.open(nvfp4_toys[8])
    report = ckpt.check()
    streamed = [n for n, t in ckpt.stream(progress=False) if isinstance(t, PackedWeight)]
    assert sorted(n.removesuffix(".weight") for n in streamed) == sorted(report.nvfp4_modules)
    assert all(parts >= {"weight", "weight_scale", "weight_scale_2"}
               for parts in ckpt.nvfp4_parts().values())  # fmt: skip
    assert isinstance(ckpt.config, Glm52Config)


def test_real_width_config_has_glm52s_widths_and_fewer_layers_and_experts() -> None:
    from glm52_plugin.toy.real_widths import real_width_config_dict

    cfg = Glm52Config.from_dict(real_width_config_dict(layers=4, experts=16))
    real = Glm52Config.glm52()
    widths = ("hidden_size", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
              "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads",
              "index_head_dim", "index_topk", "moe_intermediate_size", "intermediate_size",
              "n_shared_experts", "num_experts_per_tok")  # fmt: skip
    assert {w: getattr(cfg, w) for w in widths} == {w: getattr(real, w) for w in widths}
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.index_topk) == (6144, 64, 2048)
    assert (cfg.num_hidden_layers, cfg.n_routed_experts, cfg.mtp_layer_index) == (4, 16, None)
    assert cfg.indexer_types == real.indexer_types[:4]
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, True, True, True]


def test_make_toy_cli_checks_layers_before_writing(tmp_path, capsys) -> None:
    from glm52_plugin.cli.main import main

    assert main(["make-toy", str(tmp_path / "a"), "--layers", "3"]) == 2
    assert main(["make-toy", str(tmp_path / "b"), "--real-widths", "--layers", "11"]) == 2
    assert "--real-widths needs 1 <= --layers <= 10" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("cfg", [Glm52Config.glm52(), Glm52Config.toy(2), Glm52Config.toy(8)])
def test_engine_filter_drops_exactly_the_shared_indexer_tensors(cfg) -> None:
    from glm52_plugin.checkpoint.indexer_filter import INDEXER_MODULES, IndexerFilter

    layers = cfg.num_hidden_layers + (cfg.mtp_layer_index is not None)
    names = [f"model.layers.{i}.self_attn.indexer.{m}.weight"
             for i in range(layers) for m in INDEXER_MODULES]  # fmt: skip
    kept = {n for n, _ in IndexerFilter.for_decoder(cfg)((n, None) for n in names)}
    assert set(names) - kept == {n for n in names if is_shared_indexer(n, cfg)}
