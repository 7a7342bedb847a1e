"""NVFP4 (ModelOpt) codec: E2M1 codes, nibble packing, FP8-E4M3 block scales, FP32 global scale.

Follows ModelOpt ``qtensor/nvfp4_tensor.py`` (export recipe) and vLLM
``nvfp4_emulation_utils.py`` (decode); spec: ``architecture.md`` section 10.3. No I/O.
Shapes: N output rows, K input columns (multiple of 16); B = K / 16 blocks per row.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from glm52_plugin.nvfp4 import compiled_gather

BLOCK = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_SUBNORMAL = 2.0**-9

# Code c -> value; bit 3 is the sign, so 8 is -0.0 [ModelOpt e2m1_values][vLLM kE2M1ToFloat].
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)  # fmt: skip
# Midpoints between neighbouring magnitudes; a tie goes to the even code (round-to-nearest-even).
_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
# Ties at these midpoints round *up* (the upper neighbour has the even mantissa).
_ROUND_UP_TIES = (0.75, 1.75, 3.5)

_tables: dict[tuple[torch.device, str], Tensor] = {}


def _table(device: torch.device, kind: str) -> Tensor:
    """Cached lookup tables: 'values' [16] f32, 'bounds' [7] f32."""
    key = (device, kind)
    if key not in _tables:
        if kind == "values":
            t = torch.tensor(E2M1_VALUES, dtype=torch.float32)
        else:
            t = torch.tensor(_BOUNDS, dtype=torch.float32)
        _tables[key] = t.to(device)
    return _tables[key]


def e2m1_decode(codes: Tensor) -> Tensor:
    """uint8 codes 0..15 (any shape) -> float32 values."""
    if codes.dtype != torch.uint8:
        raise ValueError(f"e2m1 codes must be uint8, got {codes.dtype}")
    return _table(codes.device, "values")[codes.long()]


def e2m1_encode(x: Tensor) -> Tensor:
    """Round float values to E2M1 codes (uint8 0..15), nearest-even, saturating at +-6.

    Same codes as ModelOpt ``_cast_fp4``, except that an input -0.0 keeps its sign (code 8) so
    all 16 codes round-trip; both decode to zero.
    """
    x = x.float()
    sign = torch.signbit(x).to(torch.uint8) << 3
    mag = x.abs()
    # bucketize(right=False) counts bounds strictly below |x|, so a tie lands on the lower code...
    code = torch.bucketize(mag, _table(x.device, "bounds")).to(torch.uint8)
    # ...and the three ties whose upper neighbour has the even mantissa move up.
    for tie in _ROUND_UP_TIES:
        code += (mag == tie).to(torch.uint8)
    return code | sign


def pack_nibbles(codes: Tensor) -> Tensor:
    """[..., K] uint8 codes -> [..., K/2] bytes; element 2j in the low nibble of byte j."""
    if codes.shape[-1] % 2:
        raise ValueError(f"cannot pack an odd number of codes ({codes.shape[-1]})")
    return (codes[..., 1::2] << 4) | codes[..., 0::2]


def unpack_nibbles(packed: Tensor) -> Tensor:
    """[..., K/2] bytes -> [..., K] uint8 codes (low nibble first)."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def global_scale(amax: Tensor | float) -> Tensor:
    """fp32 ``weight_scale_2`` (decode direction) = amax / (6 * 448); also ``input_scale``."""
    return torch.as_tensor(amax, dtype=torch.float32) / (E2M1_MAX * E4M3_MAX)


def block_scales(w: Tensor, weight_scale_2: Tensor) -> Tensor:
    """Per-16 FP8-E4M3 block scales [N, B] of w [N, K] for a given global scale."""
    blocks = w.float().unflatten(-1, (-1, BLOCK))
    amax = blocks.abs().amax(dim=-1)
    scale = amax / (E2M1_MAX * weight_scale_2)
    scale[scale == 0] = 1.0  # all-zero block: any scale decodes to 0; ModelOpt writes 1.0
    # lower clamp: tiny blocks must not underflow to an fp8 zero (a zero scale decodes to 0)
    return scale.clamp(E4M3_MIN_SUBNORMAL, E4M3_MAX).to(torch.float8_e4m3fn)


def quantize(w: Tensor, weight_scale_2: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """w [N, K] -> (uint8 [N, K/2] packed codes, e4m3 [N, K/16] scales, fp32 [] global scale).

    ModelOpt's max-calibration export; pass ``weight_scale_2`` to share it across fused shards.
    """
    if w.ndim != 2 or w.shape[-1] % BLOCK:
        raise ValueError(f"NVFP4 needs a 2-D weight with K % {BLOCK} == 0, got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantize a weight containing NaN/Inf")
    if weight_scale_2 is None:
        weight_scale_2 = global_scale(w.abs().amax().float())
    weight_scale_2 = weight_scale_2.float().reshape(())
    if weight_scale_2 == 0:  # all-zero weight: any positive global scale decodes to zeros
        weight_scale_2 = torch.tensor(1.0)
    scale = block_scales(w, weight_scale_2)
    # same op order as ModelOpt: w / (float(scale) * weight_scale_2)
    scaled = w.float().unflatten(-1, (-1, BLOCK)) / (scale.float() * weight_scale_2).unsqueeze(-1)
    codes = e2m1_encode(scaled.flatten(-2))
    return pack_nibbles(codes), scale, weight_scale_2


def quantize_fused(weights: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Quantize shards engines fuse (gate + up) with one shared global scale (the max),
    as ModelOpt ``preprocess_linear_fusion``; vLLM keeps only the first shard's value."""
    amax = torch.stack([w.abs().amax().float() for w in weights]).amax()
    shared = global_scale(amax)
    return [quantize(w, shared) for w in weights]


def check_shapes(packed: Tensor, weight_scale: Tensor, weight_scale_2: Tensor) -> None:
    """Raise ValueError unless the three tensors form one linear-layout NVFP4 weight."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"weight must be uint8 (packed E2M1), got {packed.dtype}")
    if weight_scale.dtype != torch.float8_e4m3fn:
        raise ValueError(f"weight_scale must be float8_e4m3fn, got {weight_scale.dtype}")
    if weight_scale_2.numel() != 1:
        raise ValueError(
            f"weight_scale_2 must be a scalar, got shape {tuple(weight_scale_2.shape)}"
        )
    want = (*packed.shape[:-1], packed.shape[-1] * 2 // BLOCK)
    if packed.shape[-1] % (BLOCK // 2) or tuple(weight_scale.shape) != want:
        raise ValueError(
            f"weight_scale shape {tuple(weight_scale.shape)} does not match weight "
            f"{tuple(packed.shape)} (expected {want}: one scale per {BLOCK} values)"
        )


# dtype of the output -> integer dtype holding two of its values (one packed byte decodes to two)
_PAIR_INT = {torch.bfloat16: torch.int32, torch.float16: torch.int32, torch.float32: torch.int64}


def _decode_table(weight_scale_2: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[256 scale bytes * 256 packed bytes] -> both decoded values of the byte, as one integer.

    An FP8 scale has only 256 bit patterns, so (scale byte, packed byte) fully determines the two
    outputs: one gather per byte replaces unpack + lookup + multiply + cast passes (~5x faster on
    CPU). Entries are computed exactly as vLLM does: f32 value * (f32 scale * weight_scale_2):
    the 256 x 16 distinct products are computed and cast once, then laid out as byte pairs by
    one (serial) gather, so that building the table starts no OpenMP team (see _GRAIN).
    """
    scales = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    combined = scales * weight_scale_2.float().reshape(())  # [256]
    values = (_table(torch.device("cpu"), "values") * combined.view(256, 1)).to(dtype)  # [s, code]
    pairs = torch.index_select(values.view(-1), 0, _pair_index())  # [256 s * 256 b * 2]
    return pairs.view(-1, 2).view(_PAIR_INT[dtype]).reshape(-1).to(device)


_pair_positions: list[Tensor] = []


def _pair_index() -> Tensor:
    """Flat [s, code] position of (low nibble, high nibble) of packed byte b under scale s."""
    if not _pair_positions:
        s, b = torch.arange(256).view(256, 1), torch.arange(256).view(1, 256)
        pos = torch.stack([s * 16 + (b & 0xF), s * 16 + (b >> 4)], dim=-1)
        _pair_positions.append(pos.reshape(-1).to(torch.int32))
    return _pair_positions[0]


def dequantize(
    packed: Tensor,
    weight_scale: Tensor,
    weight_scale_2: Tensor,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """(uint8 [..., N, K/2], e4m3 [..., N, K/16], fp32 []) -> [..., N, K] in ``dtype``.

    W[n, 16b+i] = E2M1(code) * (float(weight_scale[n, b]) * weight_scale_2), the op order of
    vLLM ``dequantize_to_dtype`` (swizzle=False), so results are bit-identical to it.
    """
    check_shapes(packed, weight_scale, weight_scale_2)
    if dtype not in _PAIR_INT:
        values = e2m1_decode(unpack_nibbles(packed)).unflatten(-1, (-1, BLOCK))
        scale = weight_scale.float() * weight_scale_2.float().reshape(())
        return (values * scale.unsqueeze(-1)).flatten(-2).to(dtype)
    *lead, half = packed.shape
    blocks = half * 2 // BLOCK
    table = _decode_table(weight_scale_2, dtype, packed.device)
    # index of a packed byte = byte + 256 * scale byte of its block
    n = math.prod(lead)
    rows = packed.reshape(n, half).contiguous()
    scales = weight_scale.view(torch.uint8).reshape(n, blocks).contiguous()
    if packed.device.type != "cpu" or torch.compiler.is_compiling():
        # whole tensors: a GPU has the bandwidth for the index, and inside a caller's
        # torch.compile (the reference's compiled decode step with packed experts) Inductor
        # fuses these ops itself; the CPU paths below (threads, a nested compile) cannot be traced
        idx = compiled_gather.block_index(rows.view(n, blocks, BLOCK // 2), scales)
        out = torch.index_select(table, 0, idx.view(-1))
    else:
        out = torch.empty(rows.shape, dtype=table.dtype, device=packed.device)
        _dequantize_cpu(table, rows, scales, out)
    return out.view(dtype).reshape(*lead, half * 2)


# CPU: large tensors go to compiled_gather (one fused loop); what follows is the eager path
# for small tensors, the tail of a large one, and machines where Inductor cannot compile.
# The work is building an int32 index per packed byte (byte + 256 * scale byte of its
# block) and one gather. Done on whole tensors, each pass streams N*K*4 bytes of index through
# DRAM and the 1-D ``index_select`` kernel is serial. So rows are processed in chunks of about
# _CHUNK packed bytes, whose index stays in L2 between the passes, and contiguous row ranges
# are spread over torch.get_num_threads() Python threads (ATen ops release the GIL) so the
# gather is parallel. The index is built only from same-dtype contiguous ops, which ATen
# vectorises: a uint8 + int32 add broadcasting the scale over the block's 8 bytes runs
# TensorIterator's slow path (a mixed-dtype, 8-wide inner loop) and took twice as long as the
# gather. Chunk size, measured on 2 cores (7168x2048, idle / both cores busy with other
# processes): 32K bytes 15-16 / 16-23 ms (Python overhead of ~230 chunks), 128K 8.3-8.9 /
# 14-16 ms, 256K no better. _GRAIN (ATen's GRAIN_SIZE) only decides how many threads a tensor
# is worth.
_CHUNK = 131072
_GRAIN = 32768
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _workers(jobs: int) -> ThreadPoolExecutor | None:
    """Thread pool for ``jobs - 1`` extra row ranges (the caller runs one itself)."""
    global _pool, _pool_size
    if jobs < 2:
        return None
    with _pool_lock:
        if _pool is None or _pool_size < jobs - 1:
            # a smaller old pool is dropped, not shut down: another call may still be using it
            _pool = ThreadPoolExecutor(jobs - 1, thread_name_prefix="nvfp4-dequant")
            _pool_size = jobs - 1
        return _pool


def _gather_rows(
    table: Tensor, rows: Tensor, scales: Tensor, out: Tensor, start: int, stop: int
) -> None:
    """out[start:stop] = table[rows + 256 * scales] for one row range, chunk by chunk."""
    half, blocks = rows.shape[1], scales.shape[1]
    step = max(1, _CHUNK // half)  # rows per chunk
    m = min(step, stop - start)
    idx = torch.empty((m, blocks, BLOCK // 2), dtype=torch.int32)
    spread = torch.empty_like(idx)  # each block's scale byte, once per packed byte
    word = torch.empty((m, blocks), dtype=torch.int64)  # ... built as 8 bytes of one int64
    high = torch.empty_like(word)
    for r0 in range(start, stop, step):
        r1 = min(r0 + step, stop)
        k = r1 - r0
        i, sp, w, h = idx[:k], spread[:k], word[:k], high[:k]
        i.copy_(rows[r0:r1].view(k, blocks, BLOCK // 2))  # widen the packed bytes
        # s -> s * 0x0101010101010101 without a signed overflow (s can be >= 0x80): four copies
        # of s in the low half, then the same in the high half, as a shift and an or
        w.copy_(scales[r0:r1])
        w.mul_(0x01010101)
        torch.bitwise_left_shift(w, 32, out=h)
        w.bitwise_or_(h)
        sp.copy_(w.view(torch.uint8).view(k, blocks, BLOCK // 2))  # widen the spread scales
        i.add_(sp, alpha=256)
        torch.index_select(table, 0, i.view(-1), out=out[r0:r1].view(-1))


def _dequantize_cpu(table: Tensor, rows: Tensor, scales: Tensor, out: Tensor) -> None:
    n, half = rows.shape
    if n == 0 or half == 0:
        return
    # blocks are 8 contiguous bytes whatever the row length, so the flat stream is one problem
    flat_rows, flat_scales, flat_out = rows.view(-1), scales.view(-1), out.view(-1)
    done = compiled_gather.gather(table, flat_rows, flat_scales, flat_out)
    if done:
        tail = flat_rows.numel() - done  # fewer than compiled_gather.WIDTH bytes
        if tail:
            blocks = tail // (BLOCK // 2)
            _gather_rows(
                table,
                flat_rows[done:].view(blocks, BLOCK // 2),
                flat_scales[done // (BLOCK // 2) :].view(blocks, 1),
                flat_out[done:].view(blocks, BLOCK // 2),
                0,
                blocks,
            )
        return
    # one range per thread, but no thread for less than a few chunks of work
    jobs = max(1, min(torch.get_num_threads(), n * half // (4 * _GRAIN)))
    pool = _workers(jobs)
    cuts = [n * j // jobs for j in range(jobs + 1)]
    futures = [
        pool.submit(_gather_rows, table, rows, scales, out, cuts[j], cuts[j + 1])
        for j in range(1, jobs)
    ] if pool is not None else []  # fmt: skip
    try:
        _gather_rows(table, rows, scales, out, cuts[0], cuts[1])
    finally:
        for f in futures:
            f.result()
