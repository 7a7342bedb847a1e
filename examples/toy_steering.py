"""Make a toy checkpoint's random weights say exact text through a vLLM server (toys only).

Random toy weights emit noise; vLLM's structured outputs can force a regex, and a +100 logit bias
on GLM-5's tag tokens makes the model write ``<tool_call>`` etc. as single tokens, as a real
GLM-5.2 does, so the glm47/glm45 parsers see what they would see in production. Needs the server
started with the outlines backend enabled in reasoning (examples/vllm_serve_cpu_toy.sh does).
Against a real GLM-5.2 server, don't steer: pass no ``--toy``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>",
        "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")  # fmt: skip


def tag_token_ids(checkpoint: str | Path) -> dict[str, int]:
    """Ids of GLM-5's tag tokens, read from the checkpoint's tokenizer.json (no model load)."""
    added = json.loads((Path(checkpoint) / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in added if t["content"] in TAGS}
    missing = [t for t in TAGS if t not in ids]
    if missing:
        raise ValueError(f"{checkpoint}/tokenizer.json has no added tokens {missing}")
    return ids


def steer(text: str, checkpoint: str | Path | None) -> dict:
    """extra_body for one request: force ``text`` (no-op without a toy checkpoint)."""
    if checkpoint is None:
        return {}
    return {
        # a named group makes xgrammar refuse the regex, so vLLM applies it alone (spec vllm.md)
        "structured_outputs": {"regex": f"(?P<forced>{re.escape(text)})"},
        "logit_bias": {str(i): 100 for i in tag_token_ids(checkpoint).values()},
        "skip_special_tokens": False,
    }
