"""MLA's absorbed kv_b_proj on CPU: q_nope into latent space and attention outputs back out.

Per head, W_UK [Dn, C] maps q_nope to the latent space and W_UV [Dv, C] maps the latent output
back (``reference.layers.MLA.forward``). Two implementations:

- vLLM's ``bmm_cpu`` over weights prepacked by ``convert_weight_packed``, as vLLM's own AMX_MLA
  backend does on hosts with AMX tiles: bf16 in, fp32 accumulation, bf16 out, i.e. the
  reference's own bf16 rounding of q_lat and o. At decode sizes it is several times faster than
  a torch bmm (a [4, 8, 64] x [4, 64, 512] fp32 bmm is ~40-160 us on our 2-vCPU VM).
- torch ``matmul`` in fp32 everywhere else (on CPU a bf16 bmm of these small shapes is ~2.5x
  slower than fp32), with the weights made contiguous once.

Either is rebuilt when kv_b_proj's weight changes (a reload in place).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _engine_bmm_available(weight: Tensor) -> bool:
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
        return False
    ops = getattr(torch.ops, "_C", None)
    if ops is None or not hasattr(ops, "bmm_cpu") or not hasattr(ops, "convert_weight_packed"):
        return False
    # the condition vLLM itself uses for its AMX_MLA backend (bmm_cpu's fast path)
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


class Absorb:
    """``to_latent(q_nope [T, H, Dn]) -> [T, H, C]`` and ``from_latent(o [T, H, C]) -> [T, H, Dv]``."""

    def __init__(self, kv_b_weight: Tensor, heads: int, nope: int, v_dim: int) -> None:
        self.heads, self.nope, self.v_dim = heads, nope, v_dim
        self.key = (kv_b_weight.data_ptr(), kv_b_weight._version)
        w = kv_b_weight.detach().view(heads, nope + v_dim, -1)
        self.rank = w.shape[-1]
        self.engine = _engine_bmm_available(kv_b_weight)
        if self.engine:
            # bmm_cpu computes out[b] = mat1[b] @ mat2[b]^T with mat2 [OUT, IN] per head
            pack = torch.ops._C.convert_weight_packed
            self.w_uk = pack(w[:, :nope].transpose(1, 2).contiguous())  # [H, C, Dn]
            self.w_uv = pack(w[:, nope:].contiguous())  # [H, Dv, C]
        else:
            # strided views would make every step's batched matmuls copy (as vLLM's W_UK_T)
            w = w.float()
            self.w_uk = w[:, :nope].contiguous()  # [H, Dn, C]
            self.w_uv = w[:, nope:].transpose(1, 2).contiguous()  # [H, C, Dv]

    def is_current(self, kv_b_weight: Tensor) -> bool:
        return self.key == (kv_b_weight.data_ptr(), kv_b_weight._version)

    def to_latent(self, q_nope: Tensor) -> Tensor:
        """q_nope [T, H, Dn] (last dim contiguous) -> q_lat [T, H, C]: bf16 (engine) or fp32."""
        if not self.engine:
            return torch.matmul(q_nope.transpose(0, 1).float(), self.w_uk).transpose(0, 1)
        out = q_nope.new_empty(q_nope.shape[0], self.heads, self.rank)
        torch.ops._C.bmm_cpu(out.transpose(0, 1), q_nope.transpose(0, 1), self.w_uk, True, None)
        return out

    def from_latent(self, o: Tensor, dtype: torch.dtype) -> Tensor:
        """o [T, H, C] (any float dtype) -> [T, H, Dv] in ``dtype``."""
        if not self.engine:
            return torch.matmul(o.transpose(0, 1).float(), self.w_uv).transpose(0, 1).to(dtype)
        o = o.to(torch.bfloat16)
        out = o.new_empty(o.shape[0], self.heads, self.v_dim)
        torch.ops._C.bmm_cpu(out.transpose(0, 1), o.transpose(0, 1), self.w_uv, True, None)
        return out.to(dtype)
