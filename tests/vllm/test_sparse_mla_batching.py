"""The CPU DSA's batched indexer and sparse attention equal the reference model's per-request
functions on a paged cache, both as padded torch batches (one per decode/prefill group) and
through the fused C++ kernels. Engine-free: vLLM's metadata is faked (the kernels need only
torch's C++ extension builder)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from glm52_plugin.reference.layers import indexer_topk, sparse_attention
from glm52_plugin.vllm import cpu_dsa
from glm52_plugin.vllm.sparse_mla import (
    EagerBatch,
    FusedBatch,
    MtpTopkShare,
    group_topk,
    request_groups,
)

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


MIXED = [(1, 3), (1, TOPK), (1, 5 * TOPK + 1), (5, 5), (7, 30), (12, 12)]
EQUAL_PREFILLS = [(1, 9), (1, 4), (4, 20), (4, 6)]


@pytest.fixture(scope="module")
def kernels():
    ops = cpu_dsa.kernels()
    if ops is None:
        reason = f"fused CPU DSA kernels could not be built here: {cpu_dsa.build_error()}"
        if os.environ.get("CI") == "true":  # CI has a compiler: a build failure is a bug there
            pytest.fail(reason)
        pytest.skip(reason)
    return ops


@pytest.mark.parametrize(
    ("requests", "shapes", "firsts"),
    [
        # decodes (one query; shorter, equal and longer than TOPK), then prefills: a fresh short
        # one, a chunked continuation (queries 23..29 of 30) and a fresh long one (padded)
        (MIXED, [(3, 1), (3, 12)], [0, None]),
        # prefills of equal query counts need no padding: read and written as views
        (EQUAL_PREFILLS, [(2, 1), (2, 4)], [0, 2]),
    ],
)
def test_request_groups_pad_only_where_needed(requests, shapes, firsts) -> None:
    num_decodes = sum(q == 1 for q, _ in requests)
    metadata, positions, _, _ = _batch(requests, num_decodes=num_decodes)
    groups = request_groups(metadata, positions, BLOCK)
    assert [tuple(g.tokens.shape) for g in groups] == shapes
    assert [g.first for g in groups] == firsts


@pytest.mark.parametrize("kind", ["eager", "fused"])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("requests", [MIXED, EQUAL_PREFILLS])
def test_batches_equal_reference_per_request(kind, cache_dtype, requests, request) -> None:
    num_decodes = sum(q == 1 for q, _ in requests)
    metadata, positions, tables, x = _batch(requests, num_decodes=num_decodes)
    index_keys, latent = x.index_keys.to(cache_dtype), x.latent.to(cache_dtype)
    if kind == "eager":
        batch = EagerBatch(metadata, positions, BLOCK)
    else:  # the kernels fixture skips with the build error where they cannot be built
        batch = FusedBatch(request.getfixturevalue("kernels"), metadata, positions, BLOCK)

    scale = D_I**-0.5
    out = torch.zeros(positions.shape[0], H, C)
    topk = batch.topk(x.q_index, x.weights, index_keys, TOPK, scale)
    batch.attend(out, x.q_all, latent, topk, 0.3, C)

    start = 0
    for table, (q, length) in zip(tables, requests, strict=True):
        rows = slice(start, start + q)
        start += q
        pos = torch.arange(length)
        slots = table.long()[pos // BLOCK] * BLOCK + pos % BLOCK
        want_topk = indexer_topk(
            x.q_index[rows][None], x.weights[rows][None], index_keys[slots][None],
            positions[rows], TOPK, scale,
        )  # fmt: skip
        want = sparse_attention(
            x.q_all[rows][None], latent[None].float(), want_topk, positions[rows], 0.3, C,
            slots=slots,
        )[0]  # fmt: skip
        torch.testing.assert_close(out[rows], want, rtol=1e-5, atol=1e-6)
        if kind == "fused":  # the same keys in the same order; -1 where the reference has
            # future positions (which it masks)
            for row, p in zip(range(rows.start, rows.stop), positions[rows].tolist(), strict=True):
                got = [j for j in topk[row].tolist() if j >= 0]
                assert got == [j for j in want_topk[0, row - rows.start].tolist() if j <= p]


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


def test_fused_topk_keeps_the_reference_tie_order(kernels) -> None:
    requests = [(1, 2), (1, 3 * TOPK), (1, TOPK - 1), (5, 2 * TOPK)]
    metadata, positions, _, x = _batch(requests, num_decodes=3, seed=1)
    x.weights = x.weights.abs()
    x.index_keys[:] = x.index_keys[0]  # every key ties: the earliest positions must win
    got = FusedBatch(kernels, metadata, positions, BLOCK).topk(
        x.q_index, x.weights, x.index_keys, TOPK, D_I**-0.5
    )
    for row, p in enumerate(positions.tolist()):
        visible = min(p + 1, TOPK)
        assert got[row].tolist() == list(range(visible)) + [-1] * (TOPK - visible)


def test_fused_kernels_reject_bad_inputs_by_name(kernels) -> None:
    metadata, positions, _, x = _batch([(1, 5), (1, 9)], num_decodes=2)
    batch = FusedBatch(kernels, metadata, positions, BLOCK)
    table, starts = batch.parts[0]
    out = torch.empty(2, TOPK, dtype=torch.long)
    q, w = x.q_index.contiguous(), x.weights.contiguous()
    with pytest.raises(RuntimeError, match="block_table must be int32"):
        kernels.index_topk(out, q, w, x.index_keys, table.long(), starts, positions, BLOCK, 1.0)
    with pytest.raises(RuntimeError, match=r"index keys must be \[slots, 12\]"):
        kernels.index_topk(out, q, w, x.index_keys[:, :5], table, starts, positions, BLOCK, 1.0)
    with pytest.raises(RuntimeError, match="query_start_loc must be int32"):
        kernels.index_topk(out, q, w, x.index_keys, table, starts[:2], positions, BLOCK, 1.0)
    with pytest.raises(RuntimeError, match="latent cache must be bf16 or fp32"):
        kernels.sparse_mla(
            torch.zeros(2, H, C), x.q_all, x.latent.half(), table, starts, out, BLOCK, 1.0
        )


@pytest.mark.parametrize("kind", ["eager", "fused"])
def test_mtp_draft_steps_reuse_step0_rows_as_the_reference(kind, request) -> None:
    """index_share_for_mtp_iteration: step 0 over several queries per request, compacted to each
    request's last query (vLLM's token_indices_to_sample), then a decode step of one query per
    request one position on reuses that row: attention over exactly the reference's step-0
    selection of that last query, the newly written position not among it."""
    requests = [(3, 5), (2, 3 * TOPK), (4, TOPK)]  # draft step 0 runs over the verified tokens
    metadata, positions, tables, x = _batch(requests, num_decodes=0, seed=3)

    def batch_of(meta, pos):
        if kind == "eager":
            return EagerBatch(meta, pos, BLOCK)
        return FusedBatch(request.getfixturevalue("kernels"), meta, pos, BLOCK)

    scale = D_I**-0.5
    step0 = batch_of(metadata, positions)
    share = MtpTopkShare()
    share.keep(
        step0.rows(step0.topk(x.q_index, x.weights, x.index_keys, TOPK, scale), len(positions))
    )
    last = metadata.query_start_loc[1:].long() - 1
    share.compact(last)

    # draft step 1: one query per request at the next position, same block tables
    lengths = [length + 1 for _, length in requests]
    step1_meta = SimpleNamespace(
        query_start_loc=torch.arange(len(requests) + 1).int(), num_reqs=len(requests),
        num_decodes=len(requests), decode=SimpleNamespace(block_table=tables.int()), prefill=None,
    )  # fmt: skip
    step1_pos = torch.tensor(lengths) - 1
    q1 = torch.randn(len(requests), H, C + R, generator=torch.Generator().manual_seed(4))
    assert share.reused_rows(step1_meta, len(requests)) is None  # not in skip mode yet
    share.skip = True
    step1 = batch_of(step1_meta, step1_pos)
    out = torch.zeros(len(requests), H, C)
    step1.attend(out, q1, x.latent, step1.from_rows(share.reused_rows(step1_meta, 3)), 0.3, C)

    for r, (table, (_, length)) in enumerate(zip(tables, requests, strict=True)):
        slots = (
            table.long()[torch.arange(length + 1) // BLOCK] * BLOCK
            + torch.arange(length + 1) % BLOCK
        )
        row = slice(int(last[r]), int(last[r]) + 1)
        want_topk = indexer_topk(
            x.q_index[row][None], x.weights[row][None], x.index_keys[slots[:length]][None],
            positions[row], TOPK, scale,
        )  # fmt: skip
        want = sparse_attention(
            q1[r][None, None], x.latent[None], want_topk, step1_pos[r : r + 1], 0.3, C, slots=slots
        )[0, 0]  # fmt: skip
        torch.testing.assert_close(out[r], want, rtol=1e-5, atol=1e-6)
