"""KV cache of the reference model: MLA latent cache per layer, indexer keys only where an indexer runs.

Buffers grow by doubling so a decode step appends in O(1) amortised instead of copying the
whole context (torch.cat would make decode time grow with context length).
"""

from __future__ import annotations

from torch import Tensor


class GrowingBuffer:
    """[B, T, X] tensor with a fill length; append along T, truncate for speculative rollback."""

    def __init__(self) -> None:
        self.data: Tensor | None = None
        self.length = 0

    def append(self, x: Tensor) -> Tensor:
        """Append x [B, S, X]; returns the filled view [B, length, X]."""
        b, s, width = x.shape
        need = self.length + s
        if self.data is None or self.data.shape[1] < need:
            cap = max(need, 2 * (0 if self.data is None else self.data.shape[1]), 64)
            grown = x.new_empty(b, cap, width)
            if self.data is not None:
                grown[:, : self.length] = self.data[:, : self.length]
            self.data = grown
        self.data[:, self.length : need] = x
        self.length = need
        return self.data[:, :need]

    def view(self) -> Tensor:
        assert self.data is not None, "empty cache"
        return self.data[:, : self.length]

    def truncate(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length


class LayerCache:
    """One attention layer: normalised latent [B, T, C] + rotated k_rope [B, T, R], and, on layers
    that run an indexer, its post-norm post-RoPE keys [B, T, D_I]."""

    def __init__(self, has_indexer: bool) -> None:
        self.kv = GrowingBuffer()  # latent | k_rope concatenated: one gather per attention call
        self.index_k = GrowingBuffer() if has_indexer else None

    @property
    def length(self) -> int:
        return self.kv.length

    def truncate(self, length: int) -> None:
        self.kv.truncate(length)
        if self.index_k is not None:
            # draft steps that reuse top-k write no indexer keys; never extend past them
            self.index_k.truncate(min(length, self.index_k.length))


class ModelCache:
    """Caches for every decoder layer plus the MTP layer (which has its own latent cache)."""

    def __init__(self, has_indexer: list[bool]) -> None:
        self.layers = [LayerCache(h) for h in has_indexer]

    @property
    def length(self) -> int:
        """Tokens cached by the main model (layer 0)."""
        return self.layers[0].length

    def truncate(self, length: int, layers: range | None = None) -> None:
        for i in layers if layers is not None else range(len(self.layers)):
            self.layers[i].truncate(length)
