"""DSA sparse MLA over vLLM's paged latent cache, for platforms where vLLM has no sparse backend (CPU).

vLLM 0.32/0.33 rejects sparse attention on CPU. This module keeps vLLM's MLA layer as the owner
of the paged latent cache (its allocation, block tables and slot mapping) and runs the DSA math
of the reference model on top of it: the lightning indexer with its own key cache (full layers
only, same slot numbering as the latent cache), IndexShare reuse, and attention that reads only
the top-k rows of each request. Engine-free apart from the metadata object it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from glm52_plugin.reference.layers import indexer_topk, sparse_attention


@dataclass
class RequestView:
    """One request of a batch: its query rows in the batch and its cache slots."""

    rows: slice  # query tokens of this request in the flattened batch
    slots: Tensor  # int64 [L]: cache slot of every position 0..L-1 of the request


def request_views(metadata: object, positions: Tensor, block_size: int) -> list[RequestView]:
    """Split a vLLM MLA batch into requests (decodes first, as vLLM orders them).

    ``metadata`` is vLLM's ``MLACommonMetadata``: query_start_loc, num_decodes, and the block
    tables of ``decode`` and ``prefill``. A request's length is its last query position + 1,
    which holds with and without chunked prefill or prefix caching.
    """
    starts = metadata.query_start_loc.tolist()
    num_decodes = metadata.num_decodes
    views = []
    for i in range(metadata.num_reqs):
        rows = slice(starts[i], starts[i + 1])
        if rows.stop == rows.start:
            continue
        if i < num_decodes:
            table = metadata.decode.block_table[i]
        else:
            table = metadata.prefill.block_table[i - num_decodes]
        length = int(positions[rows.stop - 1]) + 1
        views.append(RequestView(rows, paged_slots(table, length, block_size)))
    return views


def paged_slots(block_table_row: Tensor, length: int, block_size: int) -> Tensor:
    """Cache slot of positions 0..length-1: block_table[pos // bs] * bs + pos % bs."""
    pos = torch.arange(length)
    return block_table_row.long()[pos // block_size] * block_size + pos % block_size


def write_slots(cache_rows: Tensor, slot_mapping: Tensor, values: Tensor) -> None:
    """cache_rows[slot] = values, skipping padding slots (-1)."""
    slots = slot_mapping[: values.shape[0]].long()
    valid = slots >= 0
    if not bool(valid.all()):
        slots, values = slots[valid], values[valid]
    cache_rows[slots] = values.to(cache_rows.dtype)


def request_topk(
    q_index: Tensor,
    weights: Tensor,
    index_keys: Tensor,
    view: RequestView,
    positions: Tensor,
    topk: int,
    scale: float,
) -> Tensor:
    """Indexer top-k of one request's queries over its cached indexer keys -> [1, S, K]."""
    keys = index_keys[view.slots][None]  # [1, L, D_I]
    return indexer_topk(
        q_index[view.rows][None], weights[view.rows][None], keys, positions[view.rows], topk, scale
    )


def request_attention(
    q_all: Tensor,
    latent_rows: Tensor,
    view: RequestView,
    positions: Tensor,
    topk: Tensor,
    scale: float,
    kv_rank: int,
) -> Tensor:
    """Sparse absorbed MLA of one request: q_all [T, H, C+R] -> latent outputs [S, H, C].

    Reads only the selected rows of the paged cache ``latent_rows`` [slots, C+R].
    """
    q = q_all[view.rows][None]
    return sparse_attention(
        q, latent_rows[None], topk, positions[view.rows], scale, kv_rank, slots=view.slots
    )[0]
