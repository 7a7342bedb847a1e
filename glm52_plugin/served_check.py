"""Check tokens an engine served against the reference model, teacher-forced.

The reference runs once over prompt + served tokens; at every step the served token must be the
reference's argmax or within ``tolerance`` nats of it (bf16 or NVFP4 kernels may flip a
near-tie; a wrong model, wrong weights or a broken kernel are off by many nats). Used by
``glm52 verify``, ``examples/check_against_reference.py`` and the SGLang GPU smoke script.

Pieces, engine-free (stdlib HTTP, torch, tokenizers):
- :func:`build_prompts`: deterministic text prompts, tokenized with the checkpoint's own tokenizer;
- :func:`served_tokens`: greedy tokens from a vLLM (OpenAI completions API, token-id prompts) or
  SGLang (native ``/generate`` with ``input_ids``) server;
- :class:`Reference`: the reference's logits, from the model in memory when it fits, else
  layer by layer through ``stream_logits``;
- :func:`check_logits` / :func:`check_tokens`: the per-step gaps and the verdict.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from glm52_plugin.reference.footprint import available_memory_bytes, weight_bytes_in_memory

log = logging.getLogger(__name__)

Engine = Literal["vllm", "sglang"]
Activations = Literal["bf16", "nvfp4"]
GB = 1e9  # decimal gigabytes, as stream_logits' max_memory_gb


# ---- the verdict ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenCheck:
    gaps: tuple[float, ...]  # nats between the reference argmax and the engine's token, per step
    tolerance: float

    @property
    def exact(self) -> int:
        """Steps where the engine picked exactly the reference's argmax."""
        return sum(g == 0.0 for g in self.gaps)

    @property
    def worst(self) -> float:
        return max(self.gaps, default=0.0)

    @property
    def failures(self) -> list[int]:
        return [i for i, g in enumerate(self.gaps) if g > self.tolerance]

    @property
    def ok(self) -> bool:
        return bool(self.gaps) and not self.failures

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"{verdict}: {self.exact}/{len(self.gaps)} tokens are the reference's argmax, "
            f"worst gap {self.worst:.3f} nats (tolerance {self.tolerance}), "
            f"failing steps {self.failures}"
        )


def check_logits(logits: Tensor, tokens: Sequence[int], tolerance: float = 0.5) -> TokenCheck:
    """Gaps of ``tokens`` under ``logits`` [N, V], row i being the distribution of token i."""
    if not tokens:
        raise ValueError("no generated tokens to check")
    if logits.shape[0] != len(tokens):
        raise ValueError(f"{logits.shape[0]} logit rows for {len(tokens)} tokens")
    vocab = logits.shape[-1]
    bad = [t for t in tokens if not 0 <= int(t) < vocab]
    if bad:
        raise ValueError(f"token ids outside the model's vocabulary (size {vocab}): {bad[:8]}")
    logp = logits.float().log_softmax(-1)
    picked = logp.gather(-1, torch.tensor(tokens, device=logp.device)[:, None])[:, 0]
    gaps = (logp.max(-1).values - picked).clamp_min(0).tolist()
    return TokenCheck(tuple(gaps), tolerance)


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
    return check_logits(model(ids)[0, len(prompt) - 1 :], tokens, tolerance)


# ---- prompts -------------------------------------------------------------------------------------
# Varied plain text (prose, code, numbers, lists): recurring names and facts far apart give the
# DSA indexer something to select across more than index_topk tokens.
_SENTENCES = (
    "The lighthouse keeper on the northern island wrote down the weather every morning at six.",
    "In 1887 the railway reached the valley, and the town's population doubled within a decade.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "Photosynthesis turns carbon dioxide and water into glucose and oxygen using sunlight.",
    "Maria ordered three notebooks, two pens and a blue folder; the invoice number was 40213.",
    "A mixture-of-experts layer routes every token to a few experts chosen by a learned router.",
    "The recipe asks for 250 grams of flour, 2 eggs, 100 millilitres of milk and a pinch of salt.",
    "SELECT name, COUNT(*) FROM orders WHERE status = 'shipped' GROUP BY name ORDER BY 2 DESC;",
    "Kilimanjaro is the highest mountain in Africa, rising 5,895 metres above sea level.",
    "The committee postponed the vote until Thursday because two members were travelling.",
    "To reset the router, hold the button for ten seconds until the light blinks orange.",
    "Prime numbers below fifty: 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47.",
    "She remembered that the key to the archive was hidden under the third stone by the gate.",
    "The orchestra tuned to an A of 440 hertz before the second movement of the symphony.",
    "Gradient descent updates each parameter against the gradient, scaled by the learning rate.",
    '{"city": "Lisbon", "days": 5, "units": "metric", "alerts": ["wind", "rain"]}',
    "The ship left Rotterdam on the fourth of May carrying coffee, copper and 112 passengers.",
    "Water boils at a lower temperature on a mountain because the air pressure is lower there.",
    "Question: what is 17 times 23? Answer: 17 times 23 is 391, since 17 * 20 + 17 * 3 = 391.",
    "The old library catalogue listed the atlas under shelf K, row 7, next to the star charts.",
)


def build_prompts(tokenizer_file: Path, count: int, length: int) -> list[list[int]]:
    """``count`` deterministic prompts of exactly ``length`` token ids: seeded orderings of
    varied sentences (prompt i uses seed i), tokenized with the checkpoint's own tokenizer
    without special tokens, so every id is an ordinary text token the server accepts."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    prompts = []
    for i in range(count):
        rng = random.Random(i)
        ids: list[int] = []
        n = 0
        while len(ids) < length:
            text = f"[{n}] {rng.choice(_SENTENCES)} (note {rng.randrange(10**6)})\n"
            ids += tokenizer.encode(text, add_special_tokens=False).ids
            n += 1
        prompts.append(ids[:length])
    return prompts


# ---- the served side -----------------------------------------------------------------------------
class ServerError(Exception):
    """The server could not be reached or refused a request; the message is one line."""


def _request(url: str, payload: dict | None, timeout: float) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace").strip().replace("\n", " ")[:300]
        raise ServerError(f"{url}: HTTP {e.code} {e.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerError(f"cannot reach {url}: {reason}") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise ServerError(f"{url}: the answer is not JSON: {body[:120]!r}") from None


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def served_model_name(base_url: str, timeout: float = 60) -> str:
    """The model id a vLLM (OpenAI-compatible) server lists first at /v1/models."""
    url = f"{_root(base_url)}/v1/models"
    try:
        return _request(url, None, timeout)["data"][0]["id"]
    except (KeyError, IndexError, TypeError):
        raise ServerError(f"{url}: no model listed") from None


def served_tokens(
    base_url: str,
    engine: Engine,
    prompt: Sequence[int],
    max_new_tokens: int,
    model: str | None = None,
    timeout: float = 600,
) -> list[int]:
    """Greedy tokens for a token-id prompt, ``ignore_eos`` so every request runs its full length.

    vLLM: ``/v1/completions`` with ``return_token_ids`` (vLLM's extension; the ids also come back
    as ``token_id:N`` logprob entries with ``return_tokens_as_token_ids``, which older servers
    honour). SGLang: ``/generate`` with ``input_ids``, answering ``output_ids``.
    """
    root = _root(base_url)
    if engine == "sglang":
        params = {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True}
        url = f"{root}/generate"
        answer = _request(url, {"input_ids": list(prompt), "sampling_params": params}, timeout)
        ids = answer.get("output_ids") if isinstance(answer, dict) else None
        if not isinstance(ids, list):
            raise ServerError(f"{url}: answer has no output_ids: {str(answer)[:200]}")
        return [int(t) for t in ids]
    url = f"{root}/v1/completions"
    payload = {"model": model or served_model_name(base_url), "prompt": list(prompt),
               "max_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True,
               "return_token_ids": True, "logprobs": 1,
               "return_tokens_as_token_ids": True}  # fmt: skip
    answer = _request(url, payload, timeout)
    try:
        choice = answer["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ServerError(f"{url}: answer has no choices: {str(answer)[:200]}") from None
    if choice.get("token_ids") is not None:
        return [int(t) for t in choice["token_ids"]]
    tokens = (choice.get("logprobs") or {}).get("tokens") or []
    if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return [int(t.removeprefix("token_id:")) for t in tokens]
    raise ServerError(f"{url}: answer carries neither token_ids nor token-id logprobs")


# ---- the reference side --------------------------------------------------------------------------


@dataclass
class Reference:
    """Reference logits for one checkpoint: the whole model in memory when it fits (loaded once,
    then one forward per sequence), else ``stream_logits`` (one layer's weights at a time, all
    sequences in one pass so the checkpoint is read once)."""

    path: Path
    activations: Activations = "bf16"
    max_memory_gb: float | None = None
    device: str = "cpu"
    progress: bool = True
    mode: Literal["auto", "memory", "stream"] = "auto"
    needed_gb: float = field(init=False)
    _model: object = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.needed_gb = weight_bytes_in_memory(self.path, 4) / GB
        if self.mode == "auto":
            budget = (
                self.max_memory_gb
                if self.max_memory_gb is not None
                else 0.8 * available_memory_bytes() / GB
            )
            # activations, logits and the interpreter need room next to the weights
            self.mode = "memory" if 1.25 * self.needed_gb <= budget else "stream"

    def _load(self):
        if self._model is None:
            from glm52_plugin.reference import Glm52ForCausalLM

            kwargs = {}
            if self.activations != "bf16":
                sig = inspect.signature(Glm52ForCausalLM.from_pretrained)
                if "activations" not in sig.parameters:
                    raise NotImplementedError(
                        f"activations={self.activations!r}: this build's reference model has no "
                        "NVFP4 activation emulation"
                    )
                kwargs["activations"] = self.activations
            model = Glm52ForCausalLM.from_pretrained(
                self.path, dtype=torch.float32, progress=self.progress, **kwargs
            )
            self._model = model.to(self.device)
        return self._model

    def logits(self, sequences: Sequence[Sequence[int]], start: int) -> list[Tensor]:
        """Logits [len(seq) - start, V] of each sequence from position ``start`` on (causal, so
        sequences of different lengths are right-padded into one batch without effect)."""
        if self.mode == "memory":
            from tqdm import tqdm

            model = self._load()
            out = []
            bar = tqdm(sequences, desc="reference", unit="prompt", disable=not self.progress)
            with torch.inference_mode():
                for seq in bar:
                    ids = torch.tensor([list(seq)], device=self.device)
                    out.append(model(ids)[0, start:].float().cpu())
            return out
        from glm52_plugin.reference.stream import stream_logits

        width = max(len(s) for s in sequences)
        batch = torch.zeros(len(sequences), width, dtype=torch.long)
        for i, s in enumerate(sequences):
            batch[i, : len(s)] = torch.tensor(list(s))
        logits = stream_logits(self.path, batch, dtype=torch.float32,
                               max_memory_gb=self.max_memory_gb, device=self.device,
                               activations=self.activations, progress=self.progress)  # fmt: skip
        return [logits[i, start : len(s)].float().cpu() for i, s in enumerate(sequences)]
