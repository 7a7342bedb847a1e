"""Check tokens an engine generated against the reference model, teacher-forced.

The reference runs once over prompt + generated tokens; at every step the engine's token must be
the reference's argmax or within ``tolerance`` nats of it (bf16 or NVFP4 kernels may flip a
near-tie; a wrong model or wrong weights are off by many nats). Used by the served-model example
and the SGLang GPU smoke script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class TokenCheck:
    gaps: tuple[float, ...]  # nats between the reference argmax and the engine's token, per step
    tolerance: float

    @property
    def exact(self) -> int:
        """Steps where the engine picked exactly the reference's argmax."""
        return sum(g == 0.0 for g in self.gaps)

    @property
    def failures(self) -> list[int]:
        return [i for i, g in enumerate(self.gaps) if g > self.tolerance]

    @property
    def ok(self) -> bool:
        return bool(self.gaps) and not self.failures

    def summary(self) -> str:
        worst = max(self.gaps, default=0.0)
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"{verdict}: {self.exact}/{len(self.gaps)} tokens are the reference's argmax, "
            f"worst gap {worst:.3f} nats (tolerance {self.tolerance}), failing steps {self.failures}"
        )


def check_tokens(
    model, prompt: Sequence[int], tokens: Sequence[int], tolerance: float = 0.5
) -> TokenCheck:
    """Teacher-force ``model`` (a reference ``Glm52ForCausalLM``) on prompt + tokens."""
    if not prompt or not tokens:
        raise ValueError("check_tokens needs a non-empty prompt and at least one generated token")
    vocab = model.config.vocab_size
    bad = [t for t in (*prompt, *tokens) if not 0 <= int(t) < vocab]
    if bad:
        raise ValueError(f"token ids outside the model's vocabulary (size {vocab}): {bad[:8]}")
    ids = torch.tensor([[*prompt, *tokens[:-1]]])
    logp = model(ids)[0, len(prompt) - 1 :].float().log_softmax(-1)
    picked = logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0]
    gaps = (logp.max(-1).values - picked).clamp_min(0).tolist()
    return TokenCheck(tuple(gaps), tolerance)
