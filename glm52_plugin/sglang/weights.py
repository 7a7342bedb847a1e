"""Checkpoint-name rules our SGLang classes apply on top of SGLang's loader; engine-free, so tested without SGLang.

IndexShare: only "full" layers build an indexer, but checkpoints may still carry
``model.layers.{i}.self_attn.indexer.*`` on "shared" layers. SGLang drops those silently; we drop them
with a warning. A "full" layer whose indexer tensors are absent would otherwise run with
uninitialised indexer weights (SGLang only loads what it is given), so that fails loudly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

_INDEXER_NAME = re.compile(r"^model\.layers\.(\d+)\.self_attn\.indexer\.([^.]+)\.")

# Modules of one DSA indexer, as HF names them (transformers glm_moe_dsa GlmMoeDsaIndexer). Each
# must contribute at least one tensor (NVFP4 checkpoints add *_scale tensors, bf16 ones do not).
INDEXER_MODULES: tuple[str, ...] = ("wq_b", "wk", "k_norm", "weights_proj")


def indexer_layer(name: str) -> tuple[int, str] | None:
    """(layer, module) of an indexer tensor name, e.g. ('...layers.3.self_attn.indexer.wk.weight') -> (3, 'wk')."""
    m = _INDEXER_NAME.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def shared_layers(indexer_types: Sequence[str]) -> frozenset[int]:
    return frozenset(i for i, t in enumerate(indexer_types) if t == "shared")


def full_layers(indexer_types: Sequence[str]) -> tuple[int, ...]:
    return tuple(i for i, t in enumerate(indexer_types) if t == "full")


def is_dropped(name: str, shared: frozenset[int]) -> bool:
    """True for an indexer tensor of a layer that builds no indexer (an IndexShare "shared" layer)."""
    hit = indexer_layer(name)
    return hit is not None and hit[0] in shared


def missing_indexer_modules(
    seen: Iterable[tuple[int, str]], expected_layers: Iterable[int]
) -> dict[int, tuple[str, ...]]:
    """Per expected layer, the INDEXER_MODULES that no tensor name covered; layers with none missing are left out."""
    have: dict[int, set[str]] = {}
    for layer, module in seen:
        have.setdefault(layer, set()).add(module)
    out = {}
    for layer in expected_layers:
        missing = tuple(m for m in INDEXER_MODULES if m not in have.get(layer, set()))
        if missing:
            out[layer] = missing
    return out


class IndexerWeightFilter:
    """Streams (name, tensor) pairs through, dropping shared-layer indexer tensors and noting what it saw.

    ``shared``: layers whose indexer tensors are dropped. ``expected_full``: layers that must carry a
    complete indexer; check() raises if one does not. One filter per load_weights call.
    """

    def __init__(self, shared: Iterable[int], expected_full: Iterable[int]) -> None:
        self.shared = frozenset(shared)
        self.expected_full = tuple(expected_full)
        self.dropped: Counter[int] = Counter()  # layer -> number of tensors dropped
        self._seen: set[tuple[int, str]] = set()

    def __call__(self, weights: Iterable[tuple[str, T]]) -> Iterator[tuple[str, T]]:
        for name, tensor in weights:
            hit = indexer_layer(name)
            if hit is not None:
                if hit[0] in self.shared:
                    self.dropped[hit[0]] += 1
                    continue
                self._seen.add(hit)
            yield name, tensor

    def missing(self) -> dict[int, tuple[str, ...]]:
        return missing_indexer_modules(self._seen, self.expected_full)

    def check(self) -> None:
        """Raise ValueError naming each full layer whose indexer tensors were not all in the checkpoint."""
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
