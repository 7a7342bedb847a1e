"""The absorbed kv_b_proj: vLLM's bmm_cpu path (AMX hosts) rounds exactly as the bf16
reference's torch matmuls; the fp32 path matches them to bf16 precision."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.vllm import absorb as absorb_module
from glm52_plugin.vllm.absorb import Absorb

pytest.importorskip("vllm._custom_ops", reason="vLLM is not installed in this environment")

H, DN, DV, C, T = 4, 64, 64, 512, 8


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(H * (DN + DV), C, generator=g) * 0.05).bfloat16()
    # q_nope as the engine has it: a split view of q [T, H, Dn + rope]
    q_nope = torch.randn(T, H, DN + 32, generator=g).bfloat16()[..., :DN]
    o = torch.randn(T, H, C, generator=g)
    w = weight.view(H, DN + DV, C)
    # reference.layers.MLA.forward's absorb and de-absorb, in bf16
    want_lat = torch.matmul(q_nope.transpose(0, 1), w[:, :DN]).transpose(0, 1)
    want_o = torch.matmul(o.bfloat16().transpose(0, 1), w[:, DN:].transpose(1, 2)).transpose(0, 1)
    return weight, q_nope, o, want_lat, want_o


def test_engine_bmm_rounds_as_the_bf16_reference() -> None:
    weight, q_nope, o, want_lat, want_o = _case()
    a = Absorb(weight, H, DN, DV)
    if not a.engine:
        pytest.skip("vLLM's bmm_cpu path is used only on hosts with AMX tiles (as AMX_MLA)")
    assert torch.equal(a.to_latent(q_nope), want_lat)
    assert torch.equal(a.from_latent(o, torch.bfloat16), want_o)


def test_fp32_path_matches_the_reference_to_bf16_precision(monkeypatch) -> None:
    monkeypatch.setattr(absorb_module, "_engine_bmm_available", lambda weight: False)
    weight, q_nope, o, want_lat, want_o = _case(1)
    a = Absorb(weight, H, DN, DV)
    assert not a.engine
    lat = a.to_latent(q_nope)
    assert lat.dtype == torch.float32
    torch.testing.assert_close(lat.bfloat16(), want_lat, rtol=1.6e-2, atol=1e-2)
    torch.testing.assert_close(a.from_latent(o, torch.bfloat16), want_o, rtol=1.6e-2, atol=1e-2)


def test_rebuilt_when_the_weight_changes_in_place() -> None:
    weight, *_ = _case()
    a = Absorb(weight, H, DN, DV)
    assert a.is_current(weight)
    weight.mul_(2)
    assert not a.is_current(weight)
