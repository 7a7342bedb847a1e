"""The reference model's logits equal transformers' GlmMoeDsaForCausalLM on the same toy checkpoint.

transformers >= 5.13 is independent code with the same semantics (interleaved RoPE in MLA and
indexer). Two differences by design are configured away rather than tolerated:
- its q_a/kv_a RMSNorm eps is a hard-coded 1e-6; the engines (and we) use rms_norm_eps (1e-5);
- its top-k tie-break is whatever torch.topk does for that row length. ReLU makes exact ties
  (keys no indexer head scores above 0) common; our reference breaks them toward the earlier
  position so results never depend on the cache length. The comparison runs transformers with the
  same documented rule by swapping torch.Tensor.topk for a stable sort during its forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from tests.conftest import prompt_ids

transformers = pytest.importorskip("transformers", minversion="5.13")


@contextlib.contextmanager
def stable_topk() -> Iterator[None]:
    original = torch.Tensor.topk

    def topk(self, k, dim=-1, largest=True, sorted=True):
        values, indices = self.sort(dim=dim, descending=largest, stable=True)
        return torch.return_types.topk((values.narrow(dim, 0, k), indices.narrow(dim, 0, k)))

    torch.Tensor.topk = topk
    try:
        yield
    finally:
        torch.Tensor.topk = original


def load_transformers(path):
    from transformers import GlmMoeDsaForCausalLM

    model = GlmMoeDsaForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    for layer in model.model.layers:
        layer.self_attn.q_a_layernorm.variance_epsilon = model.config.rms_norm_eps
        layer.self_attn.kv_a_layernorm.variance_epsilon = model.config.rms_norm_eps
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_match_transformers(toy_checkpoint, toy_model, toy_config, seed) -> None:
    ids = prompt_ids(48, batch=2, seed=seed)  # 48 > index_topk 16: most rows are sparse
    assert ids.shape[1] > 2 * toy_config.index_topk
    hf = load_transformers(toy_checkpoint)
    with torch.no_grad(), stable_topk():
        expected = hf(ids).logits
    ours = toy_model(ids)
    assert ours.shape == (2, 48, toy_config.vocab_size)
    assert (ours - expected).abs().max().item() < 1e-4


def test_sparse_selection_changes_the_result(toy_model, toy_config) -> None:
    """Guard that the comparison above exercises sparsity: a dense model gives other logits."""
    ids = prompt_ids(48, seed=0)
    sparse = toy_model(ids)
    for m in toy_model.modules():
        if type(m).__name__ == "Indexer":
            m.topk = 10_000
    try:
        dense = toy_model(ids)
    finally:
        for m in toy_model.modules():
            if type(m).__name__ == "Indexer":
                m.topk = toy_config.index_topk
    k = toy_config.index_topk
    assert torch.allclose(sparse[:, :k], dense[:, :k], atol=1e-5)  # rows with <= k keys: dense
    assert (sparse[:, k + 8 :] - dense[:, k + 8 :]).abs().max() > 1e-2


def test_yarn_rope_matches_transformers(toy_checkpoints, tmp_path) -> None:
    """YaRN inv_freq ramp, attention factor on cos/sin and mscale^2 on the softmax scale."""
    import json
    import shutil

    from glm52_plugin.reference import Glm52ForCausalLM

    path = shutil.copytree(toy_checkpoints[2], tmp_path / "yarn")
    config = json.loads((path / "config.json").read_text())
    config["rope_parameters"] = {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "mscale": 1.0,
        "mscale_all_dim": 1.0, "original_max_position_embeddings": 512, "beta_fast": 32.0,
        "beta_slow": 1.0,
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    ours = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    ids = prompt_ids(40, seed=4)
    with torch.no_grad(), stable_topk():
        expected = load_transformers(path)(ids).logits
    got = ours(ids)
    assert (got - expected).abs().max().item() < 1e-4
    plain = Glm52ForCausalLM.from_pretrained(
        toy_checkpoints[2], dtype=torch.float32, progress=False
    )
    assert (plain(ids) - got).abs().max().item() > 1e-2  # YaRN really changed the model
