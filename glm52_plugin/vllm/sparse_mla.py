"""DSA sparse MLA over vLLM's paged latent cache, for platforms where vLLM has no sparse backend (CPU).

vLLM 0.32/0.33 rejects sparse attention on CPU. This module keeps vLLM's MLA layer as the owner
of the paged latent cache (its allocation, block tables and slot mapping) and runs the DSA math
of the reference model on top of it: the lightning indexer with its own key cache (full layers
only, same slot numbering as the latent cache), IndexShare reuse, and attention that reads only
the top-k rows of each request. Engine-free apart from the metadata object it is handed.

Requests are batched, not looped over: a step's requests are split into vLLM's two groups
(decodes, then prefills) and each group is padded to its longest query and longest context, so a
decode step of R requests costs one indexer scoring, one sort, one gather and one attention per
layer instead of R of each. The math is ``reference.layers.indexer_topk`` / ``sparse_attention``
with per-request positions; padding never changes a result (see ``RequestGroup``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements per chunk of query rows, as the reference: bounds the [R, s, H_I, L] indexer scores and
# the [R, s, K, C+R] gathered latent rows of long prefills.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class RequestGroup:
    """Requests of one batch padded to a common query length S and context length L.

    Padding is inert: a padded query row repeats its request's first real row (so it has a real
    position and no all-masked softmax) and is never scattered back; context positions at or past
    a request's length point at slot 0 and are always in the future of its queries, so the
    indexer scores them -inf (sorted after every real key, earlier positions first, as the
    reference's own future keys) and attention masks them.
    """

    tokens: Tensor  # int64 [R, S]: row of each query in the flattened batch
    positions: Tensor  # int64 [R, S]: position of each query in its request
    slots: Tensor  # int64 [R, L]: cache slot of positions 0..L-1 of each request
    real: Tensor | None  # int64 [N]: the real queries among the R * S (None: all are real)
    # tokens == first + arange(R * S) (all real, in order: every decode group, and prefill
    # groups of equal lengths): queries are then read and written as views, not gathered
    first: int | None = None

    def take(self, values: Tensor, rows: slice) -> Tensor:
        """values[tokens[:, rows]] -> [R, s', ...] for per-query values [T, ...]."""
        if self.first is None:
            return values[self.tokens[:, rows]]
        r, s = self.tokens.shape
        return values[self.first : self.first + r * s].unflatten(0, (r, s))[:, rows]

    def scatter(self, out: Tensor, values: Tensor) -> None:
        """out[token] = values[r, s] for every real query (values [R, S, ...])."""
        if self.first is not None:
            out[self.first : self.first + values.shape[0] * values.shape[1]] = values.flatten(0, 1)
            return
        values, tokens = values.flatten(0, 1), self.tokens.flatten()
        if self.real is not None:
            values, tokens = values[self.real], tokens[self.real]
        out.index_copy_(0, tokens, values.to(out.dtype))


def request_groups(metadata: object, positions: Tensor, block_size: int) -> list[RequestGroup]:
    """Split a vLLM MLA batch into its decode and prefill groups (vLLM orders decodes first).

    ``metadata`` is vLLM's ``MLACommonMetadata``: query_start_loc, num_reqs, num_decodes, and the
    block tables of ``decode`` and ``prefill``. A request's length is its last query position + 1,
    which holds with and without chunked prefill or prefix caching.
    """
    starts = metadata.query_start_loc.long()
    groups = []
    for lo, hi, part in batch_parts(metadata):
        group = _group(starts[lo : hi + 1], part.block_table, positions, block_size)
        if group is not None:
            groups.append(group)
    return groups


def batch_parts(metadata: object) -> list[tuple[int, int, object]]:
    """(first request, end request, metadata part) of the decodes and the prefills, non-empty
    ones only: vLLM orders decodes first, and each part has its own block-table rows."""
    num_decodes = metadata.num_decodes
    parts = [(0, num_decodes, metadata.decode), (num_decodes, metadata.num_reqs, metadata.prefill)]
    return [(lo, hi, part) for lo, hi, part in parts if hi > lo]


def _group(
    starts: Tensor, block_table: Tensor, positions: Tensor, block_size: int
) -> RequestGroup | None:
    first, count = starts[:-1], starts[1:] - starts[:-1]
    keep = count > 0  # requests without query tokens in this step (none in practice)
    if not bool(keep.all()):
        first, count, block_table = first[keep], count[keep], block_table[keep]
    if first.numel() == 0:
        return None
    offsets = torch.arange(int(count.max()))
    valid = offsets < count[:, None]
    tokens = torch.where(valid, first[:, None] + offsets, first[:, None])
    length = positions[first + count - 1].long() + 1  # [R]
    key_pos = torch.arange(int(length.max()))
    slots = paged_slots(block_table, key_pos, block_size)
    # past a request's length the table holds stale or unset ids: point them at a real slot
    slots = torch.where(key_pos < length[:, None], slots, 0)
    real = None if bool(valid.all()) else valid.flatten().nonzero().squeeze(1)
    start = int(first[0])
    in_order = torch.arange(start, start + tokens.numel()).view(tokens.shape)
    dense = real is None and bool(torch.equal(tokens, in_order))
    return RequestGroup(tokens, positions[tokens].long(), slots, real, start if dense else None)


def paged_slots(block_table: Tensor, key_pos: Tensor, block_size: int) -> Tensor:
    """Cache slot of ``key_pos`` for each block-table row: table[pos // bs] * bs + pos % bs."""
    return block_table.long()[:, key_pos // block_size] * block_size + key_pos % block_size


def write_slots(cache_rows: Tensor, slot_mapping: Tensor, values: Tensor) -> None:
    """cache_rows[slot] = values, skipping padding slots (-1)."""
    slots = slot_mapping[: values.shape[0]].long()
    valid = slots >= 0
    if not bool(valid.all()):
        slots, values = slots[valid], values[valid]
    cache_rows[slots] = values.to(cache_rows.dtype)


def _chunks(n_rows: int, per_row: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(per_row, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def group_topk(
    q_index: Tensor,
    weights: Tensor,
    index_keys: Tensor,
    group: RequestGroup,
    topk: int,
    scale: float,
) -> Tensor:
    """Indexer top-k of a group: ``reference.layers.indexer_topk`` per request, in one batch.

    q_index [T, H_I, D_I] (rotated), weights fp32 [T, H_I], index_keys [slots, D_I] (the
    indexer key cache) -> key positions int64 [R, S, min(topk, L)].
    """
    r, s = group.tokens.shape
    keys = index_keys[group.slots].float()  # [R, L, D_I]: only this group's cached keys
    n_keys = keys.shape[1]
    k_sel = min(topk, n_keys)
    key_pos = torch.arange(n_keys)
    keys_t = keys.transpose(1, 2).unsqueeze(1)  # [R, 1, D_I, L]
    out = torch.empty(r, s, k_sel, dtype=torch.long)
    for rows in _chunks(s, r * q_index.shape[1] * n_keys):
        q = group.take(q_index, rows).float()
        scores = torch.matmul(q, keys_t) * scale  # [R, s', H_I, L]
        index = torch.matmul(group.take(weights, rows).unsqueeze(-2), F.relu(scores)).squeeze(-2)
        future = key_pos > group.positions[:, rows, None]  # [R, s', L]
        index = index.masked_fill(future, -math.inf)
        # the reference's tie rule: a stable sort puts the earlier position first
        order = index.sort(dim=-1, descending=True, stable=True).indices
        out[:, rows] = order[..., :k_sel]
    return out


def group_attention(
    q_all: Tensor,
    latent_rows: Tensor,
    group: RequestGroup,
    topk: Tensor,
    scale: float,
    kv_rank: int,
) -> Tensor:
    """Sparse absorbed MLA of a group: ``reference.layers.sparse_attention`` in one batch.

    q_all [T, H, C+R] (latent-space nope | rope), latent_rows [slots, C+R] (the paged cache),
    topk [R, S, K] key positions -> latent outputs [R, S, H, C]. Reads only the selected rows.
    """
    r, s = group.tokens.shape
    k, width = topk.shape[-1], latent_rows.shape[1]
    out = torch.empty(r, s, q_all.shape[1], kv_rank, dtype=q_all.dtype)
    for rows in _chunks(s, r * k * width):
        idx = topk[:, rows]  # [R, s', K]: key positions, -1 for none (reused MTP rows)
        cache_rows = group.slots.gather(1, idx.clamp_min(0).reshape(r, -1))
        # fp32 matmuls: on CPU a bf16 bmm of these small shapes is ~2.5x slower than fp32
        sel = latent_rows.index_select(0, cache_rows.reshape(-1)).view(*idx.shape, width).float()
        q = group.take(q_all, rows).float()  # [R, s', H, C+R]
        scores = torch.matmul(q, sel.transpose(-1, -2)) * scale  # [R, s', H, K]
        # causal: short rows pick masked keys
        visible = (idx >= 0) & (idx <= group.positions[:, rows, None])
        scores = scores.masked_fill(~visible[:, :, None, :], -math.inf)
        p = scores.softmax(-1, dtype=torch.float32)
        out[:, rows] = torch.matmul(p, sel[..., :kv_rank])  # [R, s', H, C]
    return out


class EagerBatch:
    """A step's DSA as padded torch batches (``RequestGroup``): runs wherever torch does."""

    def __init__(self, metadata: object, positions: Tensor, block_size: int) -> None:
        self.groups = request_groups(metadata, positions, block_size)

    def topk(
        self, q_index: Tensor, weights: Tensor, index_keys: Tensor, topk: int, scale: float
    ) -> list[Tensor]:
        return [group_topk(q_index, weights, index_keys, g, topk, scale) for g in self.groups]

    def rows(self, topk: list[Tensor], num_tokens: int) -> Tensor:
        """The selection as one row per query token: int64 [T, K] key positions, -1 where a
        query sees no key (past its position, or padding of a shorter request's row)."""
        width = max(selected.shape[-1] for selected in topk)
        out = torch.full((num_tokens, width), -1, dtype=torch.long)
        for group, selected in zip(self.groups, topk, strict=True):
            visible = selected.where(selected <= group.positions[..., None], -1)
            group.scatter(out, F.pad(visible, (0, width - selected.shape[-1]), value=-1))
        return out

    def from_rows(self, rows: Tensor) -> list[Tensor]:
        """``rows`` [T, K] (one per query token, as ``rows``) in this batch's form."""
        return [rows[group.tokens] for group in self.groups]

    def attend(
        self,
        out: Tensor,
        q_all: Tensor,
        latent_rows: Tensor,
        topk: list[Tensor],
        scale: float,
        kv_rank: int,
    ) -> None:
        for group, selected in zip(self.groups, topk, strict=True):
            group.scatter(out, group_attention(q_all, latent_rows, group, selected, scale, kv_rank))


class FusedBatch:
    """A step's DSA through the fused C++ kernels of ``cpu_dsa``: one call per part and layer.

    The kernels read vLLM's layout directly (query_start_loc, block tables, paged caches), so
    nothing is padded or gathered here. Top-k rows hold key positions, -1 past a query's visible
    keys; they are [T, topk] for the whole step and reused as such by IndexShare layers.
    """

    def __init__(self, kernels: object, metadata: object, positions: Tensor, block_size: int):
        self.kernels, self.block_size = kernels, block_size
        self.positions = positions.long()
        starts = metadata.query_start_loc.int()
        self.parts = [
            (part.block_table.int(), starts[lo : hi + 1]) for lo, hi, part in batch_parts(metadata)
        ]

    def topk(
        self, q_index: Tensor, weights: Tensor, index_keys: Tensor, topk: int, scale: float
    ) -> Tensor:
        out = torch.empty(q_index.shape[0], topk, dtype=torch.long)
        q, w = q_index.float().contiguous(), weights.float().contiguous()
        for table, starts in self.parts:
            self.kernels.index_topk(
                out, q, w, index_keys, table, starts, self.positions, self.block_size, scale
            )
        return out

    def rows(self, topk: Tensor, num_tokens: int) -> Tensor:
        """The selection as one row per query token: it already is ([T, topk], -1 for none)."""
        del num_tokens
        return topk

    def from_rows(self, rows: Tensor) -> Tensor:
        return rows

    def attend(
        self,
        out: Tensor,
        q_all: Tensor,
        latent_rows: Tensor,
        topk: Tensor,
        scale: float,
        kv_rank: int,
    ) -> None:
        if out.shape[-1] != kv_rank:
            raise ValueError(f"sparse MLA: out has {out.shape[-1]} latent dims, not {kv_rank}")
        q = q_all.float().contiguous()
        for table, starts in self.parts:
            self.kernels.sparse_mla(
                out, q, latent_rows, table, starts, topk, self.block_size, scale
            )


class MtpTopkShare:
    """``index_share_for_mtp_iteration`` for the MTP layer's attention, as vLLM's proposer drives
    it (vLLM 0.32/0.33 ``vllm/v1/spec_decode/llm_base_proposer.py``): draft step 0 runs the
    indexer over all query tokens, then ``compact(token_indices_to_sample)`` keeps each
    request's last row and ``skip = True`` makes steps 1+ reuse that row as it is, the draft
    positions written since unseen (as vLLM's CUDA sparse backends read the compacted
    ``topk_indices_buffer``). Rows hold key positions, not cache slots, so they stay valid while
    each step's batch layout changes.
    """

    def __init__(self) -> None:
        self.skip = False
        self._step_rows: Tensor | None = None  # [T, K] of the last forward that ran the indexer
        self._reused: Tensor | None = None  # [R, K]: one row per request

    def keep(self, rows: Tensor) -> None:
        self._step_rows = rows

    def compact(self, token_indices: Tensor) -> None:
        rows, self._step_rows = self._step_rows, None  # a long prefill's rows are large
        self._reused = None if rows is None else rows[token_indices.to(rows.device).long()]

    def reused_rows(self, metadata: object, num_tokens: int) -> Tensor | None:
        """[T, K] rows for this forward's tokens (each its request's row; padding -1), or None
        to run the indexer: not in skip mode, or rows that do not fit this batch (vLLM's warm-up
        dummy runs keep the last skip setting)."""
        rows = self._reused
        if not self.skip or rows is None or rows.shape[0] != metadata.num_reqs:
            return None
        starts = metadata.query_start_loc.long().to(rows.device)
        per_token = rows.repeat_interleave(starts[1:] - starts[:-1], dim=0)
        pad = num_tokens - per_token.shape[0]
        return F.pad(per_token, (0, 0, 0, pad), value=-1) if pad > 0 else per_token
