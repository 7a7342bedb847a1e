"""SGLang and a checkpoint saved by transformers (tests/hf_saved.py), as far as CPU allows.

SGLang layers need sgl_kernel (libcuda), so the in-tree constructors are replaced by recorders:
what is checked is the config SGLang's own layers would be built from, read from the checkpoint by
SGLang's own config loader, and that an EAGLE/NextN draft stops before building anything.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip(
    "sglang", reason="SGLang not installed: run in the sglang env (scripts/test_engines.sh)"
)

from glm52_plugin.checkpoint import CheckpointError
from glm52_plugin.config import GLM52_FILLS, Glm52Config

pytestmark = pytest.mark.sglang
OURS = "glm52_plugin.sglang.models.glm_moe_dsa"


def _sglang_config(path):
    from sglang.srt.utils.hf_transformers_utils import get_config

    return get_config(str(path), trust_remote_code=False)


def _record_init(monkeypatch, cls) -> dict:
    seen: dict = {}

    def init(self, config, *args, **kwargs):
        seen.update({name: getattr(config, name, None) for name in GLM52_FILLS})
        seen["built"] = True

    monkeypatch.setattr(cls, "__init__", init)
    return seen


def test_main_model_layers_see_glm52_values(monkeypatch, hf_saved_checkpoints, caplog) -> None:
    from sglang.srt.models import glm4_moe

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLM

    path = hf_saved_checkpoints[2]
    hf = _sglang_config(path)
    # SGLang reads config.topk_method / scoring_func directly, and a missing
    # indexer_rope_interleave as False (non-interleaved RoPE in the indexer: silently wrong)
    assert getattr(hf, "topk_method", None) is None
    assert getattr(hf, "indexer_rope_interleave", False) is False
    seen = _record_init(monkeypatch, glm4_moe.GlmMoeDsaForCausalLM)
    with caplog.at_level(logging.INFO, logger=OURS):
        GlmMoeDsaForCausalLM(hf)
    glm52 = Glm52Config.glm52()  # the published GLM-5.2 config.json
    want = {name: getattr(glm52, name) for name in GLM52_FILLS}
    want["num_nextn_predict_layers"] = 0  # follows the checkpoint: no MTP tensors
    assert seen == {**want, "built": True}
    filled = [r.getMessage() for r in caplog.records if "config.json omits" in r.getMessage()]
    assert len(filled) == 1
    assert "topk_method='noaux_tc'" in filled[0]


def test_nextn_draft_fails_at_startup_naming_the_layer(monkeypatch, hf_saved_checkpoints) -> None:
    from sglang.srt.models import glm4_moe

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLMNextN

    seen = _record_init(monkeypatch, glm4_moe.GlmMoeDsaForCausalLMNextN)
    hf = _sglang_config(hf_saved_checkpoints[2])
    with pytest.raises(CheckpointError, match=r"no MTP layer 2 in the checkpoint") as e:
        GlmMoeDsaForCausalLMNextN(hf)
    assert "\n" not in str(e.value)  # one line
    assert seen == {}  # nothing was built


def test_nextn_draft_of_a_checkpoint_with_mtp_still_builds(monkeypatch, toy_checkpoints) -> None:
    from sglang.srt.models import glm4_moe

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLMNextN

    seen = _record_init(monkeypatch, glm4_moe.GlmMoeDsaForCausalLMNextN)
    GlmMoeDsaForCausalLMNextN(_sglang_config(toy_checkpoints[2]))
    assert seen["built"]
    assert seen["num_nextn_predict_layers"] == 1
