"""Block-scale layouts: row-major linear (checkpoints, emulation) <-> swizzled 128x4 tiles (kernels).

As vLLM ``nvfp4_utils.swizzle_blockscale`` / ``nvfp4_emulation_utils.convert_swizzled_to_linear``
(CUTLASS / FlashInfer scale-factor layout).
"""

from __future__ import annotations

from torch import Tensor

ROW_TILE = 128  # rows per tile: 4 groups of 32
COL_TILE = 4  # scale columns per tile


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def swizzle_blockscale(scale: Tensor) -> Tensor:
    """Linear [..., M, K] scales -> swizzled [..., M128, K4] (M padded to x128, K to x4, zeros).

    Within a 128x4 tile, the scale of row 32*i + j, column c sits at flat offset 16*j + 4*i + c.
    """
    *batch, m, k = scale.shape
    mp, kp = _round_up(m, ROW_TILE), _round_up(k, COL_TILE)
    padded = scale.new_zeros((*batch, mp, kp))
    padded[..., :m, :k] = scale
    b = len(batch)
    tiles = padded.reshape(*batch, mp // ROW_TILE, 4, 32, kp // COL_TILE, COL_TILE)
    # (Mt, 4, 32, Kt, 4) -> (Mt, Kt, 32, 4, 4)
    perm = (*range(b), b, b + 3, b + 2, b + 1, b + 4)
    return tiles.permute(perm).contiguous().reshape(*batch, mp, kp)


def unswizzle_blockscale(swizzled: Tensor, m: int, k: int) -> Tensor:
    """Inverse of :func:`swizzle_blockscale`: swizzled [..., M128, K4] -> linear [..., m, k]."""
    *batch, mp, kp = swizzled.shape
    if mp != _round_up(m, ROW_TILE) or kp != _round_up(k, COL_TILE):
        raise ValueError(f"swizzled shape {(mp, kp)} does not pad ({m}, {k}) to (x128, x4)")
    b = len(batch)
    tiles = swizzled.reshape(*batch, mp // ROW_TILE, kp // COL_TILE, 32, 4, COL_TILE)
    perm = (*range(b), b, b + 3, b + 2, b + 1, b + 4)  # the permutation is its own inverse
    return tiles.permute(perm).reshape(*batch, mp, kp)[..., :m, :k].contiguous()
