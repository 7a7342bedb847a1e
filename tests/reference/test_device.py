"""Everything the reference allocates follows its input's device, so ``device="cuda"`` works.

There is no GPU in CI: the model runs on the "meta" device instead, where any tensor created on
the CPU by mistake meets a meta tensor and raises. The routed-expert loop needs real values
(which experts were hit), so the model here is all dense layers; MLA, the indexer and the
sparse attention, the parts that allocate, all run.
"""

from __future__ import annotations

import torch

from glm52_plugin.config import Glm52Config
from glm52_plugin.presets import toy_config_dict
from glm52_plugin.reference import Glm52ForCausalLM
from glm52_plugin.reference.layers import indexer_topk, sparse_attention


def _dense_config(layers: int = 2) -> Glm52Config:
    raw = toy_config_dict(layers)
    raw.update(first_k_dense_replace=layers, mlp_layer_types=["dense"] * layers)
    return Glm52Config.from_dict(raw)


def test_cpu_and_meta_tensors_do_not_mix() -> None:
    """The premise of these tests: a stray CPU tensor next to a meta one raises."""
    try:
        torch.zeros(2) + torch.zeros(2, device="meta")
    except RuntimeError:
        return
    raise AssertionError("mixing cpu and meta tensors no longer raises; these tests prove nothing")


def test_prefill_and_decode_on_meta_device() -> None:
    cfg = _dense_config()
    with torch.device("meta"):
        model = Glm52ForCausalLM(cfg, dtype=torch.float32)
    cache = model.new_cache()
    prompt = torch.zeros(2, cfg.index_topk + 3, dtype=torch.long, device="meta")
    out = model.run(prompt, cache)
    assert out.logits.device.type == "meta"
    assert out.logits.shape == (2, prompt.shape[1], cfg.vocab_size)
    step = model.run(torch.zeros(2, 1, dtype=torch.long, device="meta"), cache)
    assert step.logits.shape == (2, 1, cfg.vocab_size)
    assert cache.length == prompt.shape[1] + 1


def test_dsa_functions_allocate_on_input_device() -> None:
    b, s, t, h, d, c, k = 1, 3, 5, 2, 8, 6, 4
    meta = {"device": "meta"}
    positions = torch.arange(t - s, t, **meta)
    topk = indexer_topk(
        torch.zeros(b, s, h, d, **meta), torch.zeros(b, s, h, **meta),
        torch.zeros(b, t, d, **meta), positions, k, 0.5,
    )  # fmt: skip
    assert topk.device.type == "meta"
    assert topk.shape == (b, s, k)
    out = sparse_attention(
        torch.zeros(b, s, h, c + 2, **meta), torch.zeros(b, t, c + 2, **meta), topk, positions,
        0.5, c,
    )  # fmt: skip
    assert out.device.type == "meta"
    assert out.shape == (b, s, h, c)
