"""Linear <-> swizzled block-scale layout (spec architecture.md 10.4; vLLM swizzle_blockscale)."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.nvfp4 import swizzle_blockscale, unswizzle_blockscale


def _expected_offset(r: int, c: int, k_padded: int) -> int:
    """Flat position of linear scale (r, c) in the swizzled buffer, from the spec's description:
    tiles of 128 rows x 4 columns, tiles row-major; inside a tile, row 32*i + j, column cc
    is at 16*j + 4*i + cc."""
    tile = (r // 128) * (k_padded // 4) + c // 4
    i, j = (r % 128) // 32, r % 32
    return tile * 512 + 16 * j + 4 * i + c % 4


def test_hand_computed_positions():
    scale = torch.zeros(2, 3)
    scale[0, 0], scale[0, 2], scale[1, 0], scale[1, 1] = 1, 2, 3, 4
    flat = swizzle_blockscale(scale).reshape(-1)
    assert flat.shape == (128 * 4,)
    assert (flat[0].item(), flat[2].item(), flat[16].item(), flat[17].item()) == (1, 2, 3, 4)
    assert flat.count_nonzero().item() == 4


@pytest.mark.parametrize(("m", "k"), [(1, 1), (40, 3), (128, 4), (130, 9), (300, 12)])
def test_every_position_matches_the_tile_formula(m: int, k: int):
    scale = torch.arange(1, m * k + 1, dtype=torch.float32).view(m, k)
    sw = swizzle_blockscale(scale)
    mp, kp = -(-m // 128) * 128, -(-k // 4) * 4
    assert sw.shape == (mp, kp)
    flat = sw.reshape(-1)
    want = torch.zeros(mp * kp)
    for r in range(m):
        for c in range(k):
            want[_expected_offset(r, c, kp)] = scale[r, c]
    assert torch.equal(flat, want)
    assert torch.equal(unswizzle_blockscale(sw, m, k), scale)


def test_fp8_and_batched():
    scale = torch.rand(3, 130, 6).mul(100).to(torch.float8_e4m3fn)
    sw = swizzle_blockscale(scale)
    assert sw.dtype == torch.float8_e4m3fn
    assert sw.shape == (3, 256, 8)
    for b in range(3):
        assert torch.equal(sw[b].view(torch.uint8), swizzle_blockscale(scale[b]).view(torch.uint8))
    assert torch.equal(unswizzle_blockscale(sw, 130, 6).view(torch.uint8), scale.view(torch.uint8))


def test_unswizzle_rejects_wrong_padding():
    with pytest.raises(ValueError, match="pad"):
        unswizzle_blockscale(torch.zeros(128, 4), 129, 4)
