"""``glm52 plan --engine sglang`` picks the KV cache SGLang itself picks, asked of SGLang's own code.

SGLang 0.5.23 decides GLM-5.2's KV dtype (``_dsa_kv_cache_dtype_default``) and DSA backends
(``_dsa_split_backend_resolution``) in ``sglang/srt/arg_groups/overrides.py`` from the CUDA
compute capability alone. Both run here with the capability of each GPU the planner knows
patched in; no GPU needed. Runs in the sglang environment (scripts/test_engines.sh).
"""

from __future__ import annotations

import types
from unittest import mock

import pytest

pytest.importorskip(
    "sglang", reason="SGLang not installed: run in the sglang env (scripts/test_engines.sh)"
)

from glm52_plugin.plan.gpus import GPUS
from glm52_plugin.plan.kv import default_kv_dtype

pytestmark = pytest.mark.sglang

# The latent layout each (dtype, backend) stores, from sglang/srt/mem_cache/kv_cache_configurator.py
# calculate_mla_kv_cache_dim: trtllm keeps raw fp8 rows, other fp8 backends the scaled 656 B rows.
LAYOUT = {"bfloat16": "bf16", ("fp8_e4m3", "trtllm"): "fp8"}


def _sglang_choice(sm: int) -> tuple[str, str]:
    import sglang.srt.arg_groups.overrides as overrides

    hf = types.SimpleNamespace(
        architectures=["GlmMoeDsaForCausalLM"], index_topk=2048, learnable_sink=False
    )

    class View:  # the server-args fields these two hooks read, at their defaults
        kv_cache_dtype = "auto"
        dsa_prefill_backend = None
        dsa_decode_backend = None
        enable_hisparse = False
        dcp_size = 1

    capability = (sm // 10, sm % 10)
    with (
        mock.patch.object(
            overrides, "model_config_of", return_value=types.SimpleNamespace(hf_config=hf)
        ),
        mock.patch("sglang.srt.configs.model_config.is_deepseek_dsa", return_value=True),
        mock.patch("torch.cuda.get_device_capability", return_value=capability),
    ):
        view = View()
        view.kv_cache_dtype = overrides._dsa_kv_cache_dtype_default(view).get(
            "kv_cache_dtype", "auto"
        )
        backends = overrides._dsa_split_backend_resolution(view)
    return view.kv_cache_dtype, backends.get("dsa_decode_backend")


@pytest.mark.parametrize("gpu", list(GPUS.values()), ids=list(GPUS))
def test_plan_default_matches_sglang(gpu) -> None:
    dtype, backend = _sglang_choice(gpu.sm)
    want = LAYOUT.get(dtype, LAYOUT.get((dtype, backend), "fp8_ds_mla"))
    assert default_kv_dtype("sglang", gpu)[0] == want, (gpu.name, dtype, backend)
