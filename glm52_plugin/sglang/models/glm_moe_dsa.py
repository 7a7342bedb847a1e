"""GLM-5.2 for SGLang: the in-tree GlmMoeDsa classes plus IndexShare checks and a startup log line.

Subclasses of ``sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLM`` / ``GlmMoeDsaForCausalLMNextN``
(DSA, IndexShare, MTP, NVFP4 and weight loading are inherited). The names stay identical because
SGLang keys the DSA backend, MLA KV pool, page size and MTP draft rewrite on them
(``sglang/srt/configs/model_config.py``).
Added here: GLM-5.2 values a transformers-saved config.json omits are filled in (one log line),
a NextN/EAGLE draft of a checkpoint without MTP tensors fails at start-up naming the layer, the
config's ``indexer_types`` (as glm52_plugin.config resolves it) must match SGLang's
own skip-topk schedule, the checkpoint's safetensors headers are validated by our reader before
any weight loads (names incl. the MTP layer, NVFP4 parts and exclusions), shared-layer indexer
tensors are dropped with a warning, and a full layer without its indexer tensors fails the load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from sglang.srt.models import glm4_moe

from glm52_plugin import __version__
from glm52_plugin.checkpoint.indexer_filter import IndexerFilter
from glm52_plugin.checkpoint.preload import engine_config, require_mtp_layer, validate_before_load
from glm52_plugin.config import Glm52Config, indexer_pattern

logger = logging.getLogger(__name__)


def resolve_config(hf_config: Any, source: str = "") -> Glm52Config:
    """Our typed config from SGLang's HF config, with the indexer schedule checked against SGLang's.

    GLM-5.2 values a transformers-saved config.json omits are set on ``hf_config`` first (one log
    line): SGLang reads ``config.topk_method`` and ``config.scoring_func`` directly, and would take
    a missing ``indexer_rope_interleave`` for False. ``source`` (the checkpoint path) settles
    whether there is an MTP layer.
    """
    cfg = engine_config(hf_config, source, logger)
    check_indexer_schedule(cfg, hf_config)
    return cfg


def check_indexer_schedule(cfg: Glm52Config, hf_config: Any) -> None:
    """Raise ValueError if SGLang would share top-k on other layers than cfg.indexer_types says.

    SGLang decides per layer with ``dsa_layer_skips_topk`` (its own reading of indexer_types,
    index_topk_pattern, index_topk_freq/offset); a disagreement means layers would be built
    without the indexer the checkpoint (and our reference) has, or the other way round.
    """
    from sglang.srt.configs.model_config import dsa_layer_skips_topk

    theirs = tuple(
        "shared" if dsa_layer_skips_topk(hf_config, i) else "full"
        for i in range(cfg.num_hidden_layers)
    )
    ours = tuple(cfg.indexer_types)
    if theirs != ours:
        diff = [
            i for i in range(max(len(ours), len(theirs))) if ours[i : i + 1] != theirs[i : i + 1]
        ]
        raise ValueError(
            "indexer_types disagree between glm52_plugin.config and SGLang's dsa_layer_skips_topk "
            f"on layers {diff}: ours {indexer_pattern(ours)}, SGLang {indexer_pattern(theirs)}"
        )


def _log_active(cls_name: str, cfg: Glm52Config, extra: str = "") -> None:
    full = len(cfg.full_layers)
    logger.info(
        "glm52_plugin %s: %s override active (indexer layers full=%d/shared=%d%s)",
        __version__,
        cls_name,
        full,
        len(cfg.indexer_types) - full,
        extra,
    )


def _load_filtered(
    load: Any, weights: Iterable[tuple[str, torch.Tensor]], filt: IndexerFilter
) -> Any:
    result = load(filt(weights))
    filt.check()
    if filt.summary():
        logger.warning("glm52_plugin: %s", filt.summary())
    return result


class GlmMoeDsaForCausalLM(glm4_moe.GlmMoeDsaForCausalLM):
    """GLM-5.2 target model: in-tree SGLang class + glm52_plugin checks."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        source = getattr(config, "_name_or_path", "")
        cfg = resolve_config(config, source)  # before any layer is built: fail fast
        super().__init__(config, *args, **kwargs)
        self.glm52_config = cfg
        self.glm52_source = source
        _log_active(type(self).__name__, self.glm52_config)

    def load_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], *args: Any, **kwargs: Any
    ) -> Any:
        # names (MTP layer included), shapes, dtypes, NVFP4 parts and exclusions, from headers,
        # before SGLang consumes a single tensor
        validate_before_load(self.glm52_source, logger)
        return _load_filtered(
            lambda w: super(GlmMoeDsaForCausalLM, self).load_weights(w, *args, **kwargs),
            weights,
            IndexerFilter.for_decoder(self.glm52_config),
        )


class GlmMoeDsaForCausalLMNextN(glm4_moe.GlmMoeDsaForCausalLMNextN):
    """GLM-5.2 MTP draft: in-tree SGLang class + a check that the MTP layer's indexer is in the checkpoint.

    The MTP layer always builds an indexer; SGLang's NextN loader reads only that layer's names,
    so decoder-layer tensors pass through untouched.
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        source = getattr(config, "_name_or_path", "")
        # EAGLE / NextN drafting needs the MTP layer: one line at start-up when it is not there
        require_mtp_layer(source)
        cfg = resolve_config(config, source)
        super().__init__(config, *args, **kwargs)
        self.glm52_config = cfg
        _log_active(
            type(self).__name__,
            self.glm52_config,
            f", MTP layer {self.glm52_config.mtp_layer_index}",
        )

    def load_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], *args: Any, **kwargs: Any
    ) -> Any:
        return _load_filtered(
            lambda w: super(GlmMoeDsaForCausalLMNextN, self).load_weights(w, *args, **kwargs),
            weights,
            IndexerFilter.for_mtp(self.glm52_config),
        )


EntryClass = [GlmMoeDsaForCausalLM, GlmMoeDsaForCausalLMNextN]
