"""Build reference modules from checkpoint tensors: the whole model, or one decoder layer at a time.

Tensors come from the one checkpoint reader (``glm52_plugin.checkpoint.Checkpoint.stream``):
headers validated, NVFP4 parts grouped and checked. NVFP4 weights are dequantised once, at load,
to the compute dtype by default (per-matmul dequantisation costs more than the matmul on CPU, and
the reference is an oracle first); routed experts may stay packed instead (``PackedLinear``:
~2.3x less memory, decoded per call, and only for the experts the router picks). ``checkpoint/``
never imports this package: the dependency runs one way, reference -> checkpoint.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from glm52_plugin.checkpoint import Checkpoint
from glm52_plugin.checkpoint.names import keeps_fp32
from glm52_plugin.nvfp4 import PackedWeight
from glm52_plugin.reference import packed_linear, widened_linear
from glm52_plugin.reference.widened_linear import Scratch

if TYPE_CHECKING:
    from glm52_plugin.reference.model import Block, Glm52ForCausalLM


def assign(
    module: nn.Module,
    tensors: Mapping[str, Tensor | PackedWeight] | Iterable[tuple[str, Tensor | PackedWeight]],
    dtype: torch.dtype,
    prefix: str = "",
    device: torch.device | str | None = None,
    scratch: Scratch | None = None,
) -> None:
    """Give a meta-device ``module`` real weights: ``tensors`` (a mapping or a stream of pairs)
    by checkpoint name (``prefix`` + the module's own parameter name), all of them, shapes
    checked. Each tensor is converted as it arrives, so a stream never has two copies alive.

    Float tensors become ``dtype`` (those of ``names.FP32_TENSORS`` stay fp32); a PackedWeight
    replaces its nn.Linear by a :class:`PackedLinear` holding the bits as stored. With
    ``scratch``, a bias-free linear's weight stored in another dtype stays as stored and is
    widened per call into that shared buffer instead (:class:`WidenedLinear`); PackedLinears
    decode into it too.
    """
    pairs = tensors.items() if isinstance(tensors, Mapping) else tensors
    expected = module.state_dict(keep_vars=True)
    state: dict[str, Tensor] = {}
    for name, t in pairs:
        if not name.startswith(prefix):
            raise ValueError(f"{name}: not a tensor of {prefix.rstrip('.') or 'this module'}")
        local = name[len(prefix) :]
        if isinstance(t, PackedWeight):
            sub = local.removesuffix(".weight")
            if device is not None:
                t = PackedWeight(*(x.to(device) for x in t.tensors()))
            packed_linear.install(module, sub, t, dtype, scratch)  # checks the shape
            state.update(module.get_submodule(sub).named_buffers(prefix=sub))
            continue
        want = expected.get(local)
        if want is None:
            raise ValueError(f"{name}: no such parameter in the reference model")
        if tuple(t.shape) != tuple(want.shape):
            raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {tuple(want.shape)}")
        # integer tensors are packed NVFP4 bits: kept as they are
        target = (torch.float32 if keeps_fp32(local) else dtype) if t.is_floating_point() else None
        if (
            scratch is not None
            and target is not None
            and widened_linear.widens(module, local, t, target)
        ):
            sub = local.removesuffix(".weight")
            widened_linear.install(module, sub, t.to(device=device), target, scratch)
            state.update(module.get_submodule(sub).named_buffers(prefix=sub))
            continue
        state[local] = t.to(device=device, dtype=target)
        del t
    missing = sorted(set(module.state_dict(keep_vars=True)) - set(state))
    if missing:
        raise ValueError(f"no tensor for {len(missing)} parameter(s), e.g. {prefix}{missing[0]}")
    module.load_state_dict(state, strict=True, assign=True)


def materialize(
    model: Glm52ForCausalLM,
    tensors: Mapping[str, Tensor | PackedWeight] | Iterable[tuple[str, Tensor | PackedWeight]],
    dtype: torch.dtype,
    names: Collection[str] | None = None,
) -> Glm52ForCausalLM:
    """Move a meta-device model onto real tensors (checked shapes), in ``dtype`` except fp32
    ones. ``names``: the tensor names a stream will bring (a mapping's keys by default)."""
    cfg = model.config
    names = names if names is not None else tensors.keys()  # type: ignore[union-attr]
    if cfg.mtp_layer_index is not None:  # optional MTP copies of embedding / lm_head
        mtp = model.model.layers[cfg.mtp_layer_index]
        prefix = f"model.layers.{cfg.mtp_layer_index}."
        with torch.device("meta"):
            if prefix + "shared_head.head.weight" in names:
                mtp.shared_head.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            if prefix + "embed_tokens.weight" in names:
                mtp.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
    assign(model, tensors, dtype)
    # rotary buffers were built on meta: rebuild them for real
    from glm52_plugin.reference.layers import Rotary

    model.rotary = Rotary(cfg)
    return model.eval()


def build_model(
    cls: type[Glm52ForCausalLM],
    path: str | Path,
    dtype: torch.dtype,
    progress: bool = True,
    packed_experts: bool = False,
) -> Glm52ForCausalLM:
    """The whole model from a checkpoint directory (BF16, or NVFP4 dequantised to ``dtype``;
    with ``packed_experts`` NVFP4 routed experts stay packed)."""
    ckpt = Checkpoint.open(path)
    if packed_experts and ckpt.quant is None:
        raise ValueError(f"{path}: packed_experts needs an NVFP4 checkpoint; this one is not")
    with torch.device("meta"):
        model = cls(ckpt.config)
    keep = packed_linear.is_routed_expert if packed_experts else None
    stream = ckpt.stream(dtype, progress, keep_packed=keep)
    return materialize(model, stream, dtype, names=set(ckpt.loadable()))


def build_block(
    ckpt: Checkpoint,
    layer: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    packed_experts: bool = True,
    scratch: Scratch | None = None,
) -> Block:
    """Decoder layer ``layer`` alone (the reference's own ``Block``), its tensors read from the
    checkpoint now; NVFP4 routed experts stay packed unless ``packed_experts`` is False. With
    ``scratch``, linears stored in another dtype widen per call into it (see ``assign``)."""
    from glm52_plugin.reference.model import Block

    with torch.device("meta"):
        block = Block(ckpt.config, layer)
    keep = packed_linear.is_routed_expert if packed_experts else None
    stream = ckpt.stream(dtype, False, keep_packed=keep, names=ckpt.layer_tensors(layer))
    assign(block, stream, dtype, prefix=f"model.layers.{layer}.", device=device, scratch=scratch)
    return block.eval()
