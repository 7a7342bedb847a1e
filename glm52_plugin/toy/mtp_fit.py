"""Fit a toy's MTP layer so its greedy drafts agree with the main model's continuation.

DeepSeek-V3's MTP module (arXiv:2412.19437, section 2.2) predicts token p + 2 from the main
model's final hidden state at p and the embedding of token p + 1. The fit makes the toy's MTP layer
an approximation of the main model's next step, in closed form (no training loop):

- its decoder block is a copy of the main model's last layer (attention, router, experts, norms;
  the indexer from the last layer that runs one), so drafting runs every mechanism the engines
  implement with the same weights the main model uses at that depth;
- ``eh_proj`` is the least-squares map from ``[enorm(embed(t[p+1])), hnorm(h[p])]`` to the
  residual stream entering that last layer at p + 1, over main-model forwards on seeded random
  token sequences; ``shared_head.norm`` is the model's final norm, so the MTP's output (and the
  hidden state recycled into the next draft step) imitates the main model's final hidden state.

``enorm`` / ``hnorm`` keep their random (!= 1) weights: the least squares absorbs them, and a
missing norm in an engine still changes the drafts. Deterministic for a given seed and thread
count; about a second for the 2-layer toy.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from glm52_plugin.config import Glm52Config

log = logging.getLogger(__name__)

# Main-model forwards the least squares is fitted on: sequences x tokens.
FIT_SEQUENCES, FIT_TOKENS = 48, 48
# Added to the toy seed for the fitting sequences, so they differ from any test prompt_ids(seed).
_SEQUENCE_SEED_OFFSET = 7919


def _model(cfg: Glm52Config, tensors: dict[str, Tensor]):
    from glm52_plugin.reference.model import Glm52ForCausalLM

    model = Glm52ForCausalLM(cfg, dtype=torch.float32)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.eval()


@torch.inference_mode()
def fit_mtp_layer(cfg: Glm52Config, tensors: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """The fitted MTP-layer tensors (same names, shapes and dtypes as in ``tensors``)."""
    if cfg.mtp_layer_index is None:
        raise ValueError("fit_mtp_layer: the config has no MTP layer")
    n = cfg.num_hidden_layers
    model = _model(cfg, tensors)
    last = model.model.layers[n - 1]
    indexer_layer = max(i for i in range(n) if cfg.has_indexer(i))
    mtp = model.model.layers[n]

    # 1. the block and the head's norm: copies of the main model's
    sources = dict(last.state_dict())
    sources.update(
        (k, v)
        for k, v in model.model.layers[indexer_layer].state_dict().items()
        if k.startswith("self_attn.indexer.")
    )
    own = mtp.state_dict()
    for name, value in sources.items():
        if name in own:
            own[name].copy_(value)
    mtp.shared_head.norm.weight.copy_(model.model.norm.weight)

    # 2. eh_proj: least squares onto the residual stream entering the last layer, one step ahead
    gen = torch.Generator().manual_seed(seed + _SEQUENCE_SEED_OFFSET)
    ids = torch.randint(0, cfg.vocab_size, (FIT_SEQUENCES, FIT_TOKENS), generator=gen)
    captured: dict[str, Tensor] = {}
    hook = last.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
    try:
        hidden = model.run(ids).hidden  # [N, T, D] after the final norm
    finally:
        hook.remove()
    d = cfg.hidden_size
    # MTP row p pairs hidden[p] with token p + 1; row 0 is skipped (its embedding is masked)
    inputs = torch.cat(
        (mtp.enorm(model.model.embed_tokens(ids[:, 2:])), mtp.hnorm(hidden[:, 1:-1])), -1
    ).reshape(-1, 2 * d)
    target = captured["x"][:, 2:].reshape(-1, d)
    solution = torch.linalg.lstsq(inputs.double(), target.double()).solution  # [2D, D]
    mtp.eh_proj.weight.copy_(solution.T.float())
    residual = (inputs @ solution.float() - target).pow(2).mean() / target.pow(2).mean()
    log.debug("MTP fit: eh_proj relative residual %.4f", float(residual))

    prefix = f"model.layers.{n}."
    fitted = {prefix + k: v for k, v in mtp.state_dict().items()}
    return {k: v.to(tensors[k].dtype) for k, v in fitted.items() if k in tensors}
