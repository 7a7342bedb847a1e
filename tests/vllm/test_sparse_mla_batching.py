"""The CPU DSA's batched indexer and sparse attention (one padded batch per decode/prefill group)
equal the reference model's per-request functions on a paged cache. Engine-free: vLLM's
metadata is faked, so this also runs without vLLM installed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from glm52_plugin.reference.layers import indexer_topk, sparse_attention
from glm52_plugin.vllm.sparse_mla import group_attention, group_topk, request_groups

BLOCK, BLOCKS = 4, 128
TOPK, H, C, R, H_I, D_I = 8, 2, 16, 8, 3, 12


def _batch(requests: list[tuple[int, int]], num_decodes: int, seed: int = 0):
    """requests: (query tokens, context length) each; the queries are the last positions."""
    g = torch.Generator().manual_seed(seed)
    width = max(-(-length // BLOCK) for _, length in requests) + 2  # + stale columns
    # random physical blocks, and garbage beyond each request's blocks (vLLM leaves stale ids)
    tables = torch.randperm(BLOCKS, generator=g)[: len(requests) * width].view(len(requests), -1)
    counts = torch.tensor([q for q, _ in requests])
    positions = torch.cat([torch.arange(length - q, length) for q, length in requests])
    metadata = SimpleNamespace(
        query_start_loc=torch.cat((torch.zeros(1), counts.cumsum(0))).int(),
        num_reqs=len(requests),
        num_decodes=num_decodes,
        decode=SimpleNamespace(block_table=tables[:num_decodes].int()) if num_decodes else None,
        prefill=SimpleNamespace(block_table=tables[num_decodes:].int()),
    )
    t = positions.shape[0]
    tensors = SimpleNamespace(
        q_index=torch.randn(t, H_I, D_I, generator=g),
        # negative head weights too: ReLU zeros and sign mixes make exact ties common
        weights=torch.randn(t, H_I, generator=g),
        index_keys=torch.randn(BLOCKS * BLOCK, D_I, generator=g),
        q_all=torch.randn(t, H, C + R, generator=g),
        latent=torch.randn(BLOCKS * BLOCK, C + R, generator=g),
    )
    return metadata, positions, tables, tensors


@pytest.mark.parametrize(
    ("requests", "shapes", "firsts"),
    [
        # decodes (one query; shorter, equal and longer than TOPK), then prefills: a fresh short
        # one, a chunked continuation (queries 23..29 of 30) and a fresh long one (padded)
        ([(1, 3), (1, TOPK), (1, 5 * TOPK + 1), (5, 5), (7, 30), (12, 12)],
         [(3, 1), (3, 12)], [0, None]),
        # prefills of equal query counts need no padding: read and written as views
        ([(1, 9), (1, 4), (4, 20), (4, 6)], [(2, 1), (2, 4)], [0, 2]),
    ],
)  # fmt: skip
def test_groups_equal_reference_per_request(requests, shapes, firsts) -> None:
    num_decodes = sum(q == 1 for q, _ in requests)
    metadata, positions, tables, x = _batch(requests, num_decodes=num_decodes)
    groups = request_groups(metadata, positions, BLOCK)
    assert [tuple(g.tokens.shape) for g in groups] == shapes
    assert [g.first for g in groups] == firsts

    scale = D_I**-0.5
    out = torch.zeros(positions.shape[0], H, C)
    for group in groups:
        topk = group_topk(x.q_index, x.weights, x.index_keys, group, TOPK, scale)
        group.scatter(out, group_attention(x.q_all, x.latent, group, topk, 0.3, C))

    start = 0
    for table, (q, length) in zip(tables, requests, strict=True):
        rows = slice(start, start + q)
        start += q
        pos = torch.arange(length)
        slots = table.long()[pos // BLOCK] * BLOCK + pos % BLOCK
        want_topk = indexer_topk(
            x.q_index[rows][None], x.weights[rows][None], x.index_keys[slots][None],
            positions[rows], TOPK, scale,
        )  # fmt: skip
        want = sparse_attention(
            x.q_all[rows][None], x.latent[None], want_topk, positions[rows], 0.3, C, slots=slots
        )[0]
        torch.testing.assert_close(out[rows], want, rtol=1e-5, atol=1e-6)


def test_group_topk_keeps_the_reference_selection_and_tie_order() -> None:
    requests = [(1, 2), (1, 3 * TOPK), (1, TOPK - 1)]
    metadata, positions, _, x = _batch(requests, num_decodes=3, seed=1)
    x.weights = x.weights.abs()
    x.index_keys[:] = x.index_keys[0]  # every key ties: the earliest positions must win
    (group,) = request_groups(metadata, positions, BLOCK)
    got = group_topk(x.q_index, x.weights, x.index_keys, group, TOPK, D_I**-0.5)
    for r, (_, length) in enumerate(requests):
        visible = got[r, 0][got[r, 0] < length]  # the rest are padding positions, never read
        assert visible.tolist() == list(range(min(length, TOPK)))
