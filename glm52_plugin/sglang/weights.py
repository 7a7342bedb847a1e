"""Checkpoint-name rules our SGLang classes apply on top of SGLang's loader; engine-free, so tested without SGLang.

IndexShare: only "full" layers build an indexer, but checkpoints may still carry
``model.layers.{i}.self_attn.indexer.*`` on "shared" layers. SGLang drops those silently; we drop them
with a summary warning. A "full" layer whose indexer tensors are absent would otherwise run with
uninitialised indexer weights (SGLang only loads what it is given), so that fails loudly. The rules
live in glm52_plugin.checkpoint.indexer_filter, shared with the vLLM adapter; these are its names
under the SGLang adapter's spelling.
"""

from __future__ import annotations

from glm52_plugin.checkpoint.indexer_filter import (
    INDEXER_MODULES,
    IndexerFilter,
    full_layers,
    indexer_layer,
    is_dropped,
    missing_indexer_modules,
    shared_layers,
)

IndexerWeightFilter = IndexerFilter

__all__ = [
    "INDEXER_MODULES",
    "IndexerWeightFilter",
    "full_layers",
    "indexer_layer",
    "is_dropped",
    "missing_indexer_modules",
    "shared_layers",
]
