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

    def nbytes(self) -> int:
        total = 0
        for buf in (self.kv, self.index_k):
            if buf is not None and buf.data is not None:
                total += buf.length * buf.data[:, :1].numel() * buf.data.element_size()
        return total


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

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.layers)


class StaticBuffer:
    """A fixed-capacity [B, N, X] buffer for the compiled decode step: ``append`` writes the new
    rows at ``positions`` in place and returns all N rows, so every tensor shape is independent of
    the fill length and one compiled graph serves the whole generation.

    Rows not yet written must be zeros: the indexer's and attention's causal masks exclude them,
    but a masked softmax weight of 0 times a NaN row of uninitialised memory would still be NaN.
    """

    def __init__(self, data: Tensor, positions: Tensor) -> None:
        self.data, self.positions = data, positions

    def append(self, x: Tensor) -> Tensor:
        self.data.index_copy_(1, self.positions, x)
        return self.data


class StaticLayerCache:
    """``LayerCache``'s interface (``kv`` / ``index_k`` with ``append``) over fixed-capacity buffers."""

    def __init__(self, kv: Tensor, index_k: Tensor | None, positions: Tensor) -> None:
        self.kv = StaticBuffer(kv, positions)
        self.index_k = StaticBuffer(index_k, positions) if index_k is not None else None


class StaticCache:
    """Fixed-capacity copies of a prefilled ``ModelCache``'s main-model layers (MTP layer excluded),
    zero beyond the prefill, plus the number of positions written so far."""

    def __init__(self, cache: ModelCache, num_layers: int, capacity: int) -> None:
        if capacity < cache.length:
            raise ValueError(f"capacity {capacity} < {cache.length} cached tokens")
        self.length = cache.length
        self.capacity = capacity
        self.kv: list[Tensor] = []
        self.index_k: list[Tensor | None] = []
        for layer in cache.layers[:num_layers]:
            self.kv.append(_padded(layer.kv.view(), capacity))
            idx = layer.index_k
            self.index_k.append(_padded(idx.view(), capacity) if idx is not None else None)


def _padded(x: Tensor, capacity: int) -> Tensor:
    out = x.new_zeros(x.shape[0], capacity, x.shape[2])
    out[:, : x.shape[1]] = x
    return out
