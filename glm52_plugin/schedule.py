"""IndexShare schedule as text: which layers run their indexer and whose top-k each layer reuses."""

from __future__ import annotations

from glm52_plugin.config import Glm52Config


def reuse_groups(cfg: Glm52Config) -> list[list[int]]:
    """Layers grouped by the full layer whose top-k they use: [[0], [1], [2, 3, 4, 5], ...]."""
    groups: list[list[int]] = []
    for i, kind in enumerate(cfg.indexer_types):
        if kind == "full":
            groups.append([i])
        else:
            groups[-1].append(i)  # layer 0 is always full (validated), so groups is non-empty
    return groups


def render_schedule(cfg: Glm52Config, width: int = 40) -> str:
    """A strip per ``width`` layers: F = full (runs its indexer), s = shared (reuses top-k)."""
    n = cfg.num_hidden_layers
    full = cfg.full_layers
    lines = [
        f"IndexShare: {len(full)} full / {n - len(full)} shared indexer layers of {n}"
        + (f"; MTP layer {cfg.mtp_layer_index} runs its own indexer" if cfg.mtp_layer_index else "")
    ]
    for start in range(0, n, width):
        chunk = cfg.indexer_pattern[start : start + width]
        ticks = "".join(str((start + i) // 10 % 10) if (start + i) % 10 == 0 else " "
                        for i in range(len(chunk)))  # fmt: skip
        strip = chunk.replace("S", "s")
        lines += [f"  {start:>3}  {ticks}", f"       {strip}"]
    groups = ", ".join(f"{g[0]}" if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in reuse_groups(cfg))
    lines.append(f"  top-k groups (first layer computes, the rest reuse): {groups}")
    return "\n".join(lines)
