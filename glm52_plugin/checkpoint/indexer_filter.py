"""IndexShare indexer tensors in a weight stream: drop those of shared layers, check full ones.

Only "full" layers (and the MTP layer) build a DSA indexer, but checkpoints exported without
IndexShare pruning still carry ``model.layers.{i}.self_attn.indexer.*`` on "shared" layers.
Engines either drop those silently (SGLang) or raise KeyError on them (vLLM's CUDA loader); the
adapters drop them with a warning instead. A full layer whose indexer tensors are absent would
run with uninitialised indexer weights (engines load only what they are given), so that fails.
Engine-free: the vLLM and SGLang adapters both use it, and it is tested without either engine.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import TypeVar

from glm52_plugin.checkpoint.names import indexer_layer
from glm52_plugin.config import Glm52Config

T = TypeVar("T")

# Modules of one DSA indexer, as HF names them (transformers glm_moe_dsa GlmMoeDsaIndexer). Each
# must contribute at least one tensor (NVFP4 checkpoints add *_scale tensors, bf16 ones do not).
INDEXER_MODULES: tuple[str, ...] = ("wq_b", "wk", "k_norm", "weights_proj")


def shared_layers(indexer_types: Sequence[str]) -> frozenset[int]:
    return frozenset(i for i, t in enumerate(indexer_types) if t == "shared")


def full_layers(indexer_types: Sequence[str]) -> tuple[int, ...]:
    return tuple(i for i, t in enumerate(indexer_types) if t == "full")


def is_dropped(name: str, shared: frozenset[int]) -> bool:
    """True for an indexer tensor of a layer in ``shared``; with the config's own shared layers
    this is ``names.is_shared_indexer``, the rule every loader applies."""
    hit = indexer_layer(name)
    return hit is not None and hit[0] in shared


def missing_indexer_modules(
    seen: Iterable[tuple[int, str]], expected_layers: Iterable[int]
) -> dict[int, tuple[str, ...]]:
    """Per expected layer, the INDEXER_MODULES no tensor name covered; complete layers left out."""
    have: dict[int, set[str]] = {}
    for layer, module in seen:
        have.setdefault(layer, set()).add(module)
    out = {}
    for layer in expected_layers:
        missing = tuple(m for m in INDEXER_MODULES if m not in have.get(layer, set()))
        if missing:
            out[layer] = missing
    return out


class IndexerFilter:
    """Streams (name, tensor) pairs through, dropping shared-layer indexer tensors and noting what
    it saw. One filter per load.

    ``shared``: layers whose indexer tensors are dropped. ``expected_full``: layers that must carry
    a complete indexer; check() raises if one does not. ``warn_each_layer``: a logger to warn on
    as each shared layer's first indexer tensor is dropped (vLLM's style, which names a tensor);
    without it the caller logs summary() once after the load (SGLang's style).
    """

    def __init__(
        self,
        shared: Iterable[int],
        expected_full: Iterable[int],
        *,
        warn_each_layer: logging.Logger | None = None,
    ) -> None:
        self.shared = frozenset(shared)
        self.expected_full = tuple(expected_full)
        self.warn_each_layer = warn_each_layer
        self.dropped: Counter[int] = Counter()  # layer -> number of tensors dropped
        self.seen: set[tuple[int, str]] = set()  # (layer, module) of indexer tensors passed on

    @classmethod
    def for_decoder(
        cls, cfg: Glm52Config, *, warn_each_layer: logging.Logger | None = None
    ) -> IndexerFilter:
        """The main model's filter: shared layers dropped, full layers expected. The MTP layer
        (index num_hidden_layers) is neither: its tensors pass for the MTP model to load."""
        types = cfg.indexer_types
        return cls(shared_layers(types), full_layers(types), warn_each_layer=warn_each_layer)

    @classmethod
    def for_mtp(cls, cfg: Glm52Config) -> IndexerFilter:
        """The MTP draft's filter: nothing dropped, the MTP layer (which always builds an
        indexer) expected; decoder-layer tensors pass through for the draft loader to ignore."""
        mtp = cfg.mtp_layer_index
        return cls((), () if mtp is None else (mtp,))

    def __call__(self, weights: Iterable[tuple[str, T]]) -> Iterator[tuple[str, T]]:
        for name, tensor in weights:
            hit = indexer_layer(name)
            if hit is not None:
                layer = hit[0]
                if layer in self.shared:
                    if self.warn_each_layer is not None and not self.dropped[layer]:
                        self.warn_each_layer.warning(
                            "layer %d is a shared IndexShare layer: ignoring its indexer "
                            "tensors (%s, ...)", layer, name,
                        )  # fmt: skip
                    self.dropped[layer] += 1
                    continue
                self.seen.add(hit)
            yield name, tensor

    def missing(self) -> dict[int, tuple[str, ...]]:
        return missing_indexer_modules(self.seen, self.expected_full)

    def check(self) -> None:
        """Raise ValueError naming each expected layer whose indexer tensors were not all seen."""
        missing = self.missing()
        if missing:
            detail = "; ".join(
                f"layer {layer}: " + ", ".join(f"self_attn.indexer.{m}" for m in mods)
                for layer, mods in sorted(missing.items())
            )
            raise ValueError(
                f"checkpoint lacks indexer tensors of {len(missing)} 'full' (indexer-building) "
                f"layer(s) per indexer_types: {detail}"
            )

    def summary(self) -> str:
        """One line for the warning about dropped tensors ('' when nothing was dropped)."""
        if not self.dropped:
            return ""
        layers = sorted(self.dropped)
        return (
            f"ignored {sum(self.dropped.values())} indexer tensor(s) on {len(layers)} 'shared' "
            f"layer(s) that build no indexer (IndexShare): layers {layers}"
        )


def require_indexers_loaded(params: Iterable[str], loaded: Collection[str], what: str) -> None:
    """Fail naming the model's indexer parameters that the load did not fill.

    The engine-side twin of IndexerFilter.check(), for engines that report loaded parameter
    names (vLLM, whose names are fused): its own strict check would also fail, but only after
    loading everything and with internal names; this names the IndexShare cause first.
    """
    missing = sorted(n for n in params if ".indexer." in n and n not in loaded)
    if missing:
        raise ValueError(f"checkpoint lacks indexer tensors of {what}: {missing[:4]}")
