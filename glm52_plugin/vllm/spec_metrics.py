"""vLLM's own speculative-decoding counters, read from ``LLM.get_metrics()``.

Names as vLLM's v1 metrics publish them (``vllm/v1/spec_decode/metrics.py``, read back by
``vllm/v1/metrics/reader.py``):
``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``, ``..._num_accepted_tokens`` and the
per-position vector ``..._num_accepted_tokens_per_pos``.
"""

from __future__ import annotations

from typing import Any

_SCALARS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")


def spec_decode_counters(llm: Any) -> dict[str, Any]:
    """The counters so far: scalars by short name, and ``num_accepted_tokens_per_pos`` as a list."""
    out: dict[str, Any] = {}
    for metric in llm.get_metrics():
        name = metric.name.removeprefix("vllm:spec_decode_")
        if name in _SCALARS:
            out[name] = metric.value
        elif name == "num_accepted_tokens_per_pos":
            out[name] = list(metric.values)
    return out
