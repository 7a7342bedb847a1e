"""Linears whose weights stay as stored and are widened per call into one reused buffer.

``stream_logits`` in fp32 over a BF16 checkpoint used to widen each decoder layer's weights into
fresh memory when the layer was read: twice the layer's bytes, first touched page by page (page
faults) and written once more per layer, then freed. A :class:`WidenedLinear` keeps the weight as
stored (for a CPU stream, the memory-mapped bytes of the file) and widens it only when it runs, into
a :class:`Scratch` buffer that every linear of the stream shares: one linear's widened weight
alive at a time, no new pages after the first layer, and a routed expert the router does not pick
is never widened. The matmul sees the same values, shape and layout as a weight widened at load
(a fresh contiguous tensor), so results are bit-identical to the in-memory reference's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Scratch:
    """One reusable buffer for the weight of the linear running now (one at a time: the stream
    runs its modules one after another). It grows to the largest request and is then reused, so
    after the first layer no call touches new pages."""

    def __init__(self) -> None:
        self._buf: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self._buf is None else self._buf.numel()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A contiguous ``shape`` tensor of ``dtype`` over the buffer (its contents undefined);
        valid until the next ``take``."""
        need = math.prod(shape) * dtype.itemsize
        if self._buf is None or self._buf.numel() < need or self._buf.device != device:
            self._buf = None  # free the smaller one before allocating its successor
            self._buf = torch.empty(need, dtype=torch.uint8, device=device)
        return self._buf[:need].view(dtype).view(shape)

    def converted(self, t: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``t.to(device, dtype)`` written into the buffer: valid until the next ``take``."""
        return self.take(tuple(t.shape), dtype, device).copy_(t)

    def release(self) -> None:
        self._buf = None


class WidenedLinear(nn.Module):
    """A bias-free nn.Linear whose weight is held as stored (``stored``, e.g. BF16) and widened to
    ``dtype`` into ``scratch`` at each call."""

    def __init__(self, stored: Tensor, dtype: torch.dtype, scratch: Scratch) -> None:
        super().__init__()
        self.out_features, self.in_features = stored.shape
        self.dtype = dtype
        self.scratch = scratch
        self.register_buffer("stored", stored)

    @property
    def weight(self) -> Tensor:
        """The widened weight as a fresh tensor, for code that reads .weight (MLA's absorbed
        kv_b_proj keeps it across other linears' calls, so it cannot live in the scratch)."""
        return self.stored.to(self.dtype)

    def widened(self) -> Tensor:
        """The weight in ``dtype``, in the scratch: valid until the scratch's next use."""
        return self.scratch.converted(self.stored, self.dtype, self.stored.device)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.widened())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self.stored.dtype} widened to {self.dtype} per call")  # fmt: skip


def install(
    model: nn.Module, module: str, stored: Tensor, dtype: torch.dtype, scratch: Scratch
) -> None:
    """Replace the bias-free nn.Linear ``module`` of ``model`` by a WidenedLinear of ``stored``."""
    parent_name, _, attr = module.rpartition(".")
    old = model.get_submodule(module)
    if not isinstance(old, nn.Linear) or old.bias is not None:
        raise ValueError(f"{module}: not a bias-free linear layer ({type(old).__name__})")
    if tuple(stored.shape) != (old.out_features, old.in_features):
        raise ValueError(
            f"{module}.weight: shape {tuple(stored.shape)}, expected "
            f"{(old.out_features, old.in_features)}"
        )
    setattr(model.get_submodule(parent_name), attr, WidenedLinear(stored, dtype, scratch))


def widens(module: nn.Module, local: str, stored: Tensor, target: torch.dtype) -> bool:
    """Whether ``local`` (a parameter name within ``module``) is the weight of a bias-free
    nn.Linear whose stored tensor needs a dtype change: such weights widen per call."""
    if not local.endswith(".weight") or stored.dtype == target or not stored.is_floating_point():
        return False
    try:
        owner = module.get_submodule(local.removesuffix(".weight"))
    except AttributeError:
        return False
    return isinstance(owner, nn.Linear) and owner.bias is None
