"""Greedy / sampled decoding with the reference model, optionally with MTP speculative decoding.

Speculative decoding reads like gpt-fast's ``speculative_decode``: the MTP layer drafts k tokens
(its indexer runs on the first draft pass; with ``index_share_for_mtp_iteration`` later draft
steps reuse that pass's top-k row of its last token, as the engines do), the main model
verifies all of them in one pass, and the standard accept/reject rule keeps the output
distribution exactly the main model's — so greedy speculative output equals plain greedy
output token for token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from glm52_plugin.reference.compiled import CompiledDecoder
from glm52_plugin.reference.model import Glm52ForCausalLM


@dataclass
class Sampler:
    """temperature 0 = greedy; otherwise softmax(logits / T) restricted to the top-p nucleus."""

    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None

    def probs(self, logits: Tensor) -> Tensor:
        """logits [..., V] -> probabilities [..., V] (one-hot for greedy)."""
        if self.temperature <= 0:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        p = (logits.float() / self.temperature).softmax(-1)
        if self.top_p < 1.0:
            sorted_p, order = p.sort(-1, descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keep the token crossing top_p
            p = p.scatter(-1, order, sorted_p.masked_fill(outside, 0.0))
            p = p / p.sum(-1, keepdim=True)
        return p

    def sample(self, logits: Tensor) -> Tensor:
        """logits [B, V] -> token ids [B]."""
        if self.temperature <= 0:
            return logits.argmax(-1)
        return torch.multinomial(self.probs(logits), 1, generator=self.generator).squeeze(-1)


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # new tokens per batch row (stop token included)
    prefill_seconds: float
    decode_seconds: float
    drafted: int = 0  # MTP draft tokens proposed
    accepted: int = 0  # ... and accepted by the main model
    rounds: list[int] = field(default_factory=list)  # accepted drafts per verification
    draft_tokens: int = 0  # k: drafts proposed per verification (0 without MTP)
    compile_seconds: float = 0.0  # generate(compile=True): tracing + codegen, not in decode_seconds
    compiled: bool = False  # the compiled decode step ran (False: not asked, or fell back to eager)

    @property
    def decode_tokens_per_second(self) -> float:
        n = sum(len(t) for t in self.tokens) - len(self.tokens)  # first token comes from prefill
        return n / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def accepted_per_position(self) -> list[int]:
        """Drafts accepted at each draft position 0..k-1 (position j counts only when 0..j-1 were
        accepted too: vLLM's ``num_accepted_tokens_per_pos``)."""
        return [sum(r > j for r in self.rounds) for j in range(self.draft_tokens)]

    @property
    def acceptance_per_position(self) -> list[float]:
        """Accepted / verifications at each draft position (vLLM's per-position acceptance rate)."""
        n = len(self.rounds)
        return [a / n if n else float("nan") for a in self.accepted_per_position]

    @property
    def acceptance_length(self) -> float:
        """Mean tokens per verification: accepted drafts + the verifier's own token (vLLM's
        "mean acceptance length")."""
        return 1 + self.accepted / len(self.rounds) if self.rounds else float("nan")


def generate(
    model: Glm52ForCausalLM,
    input_ids: Tensor,
    max_new_tokens: int,
    sampler: Sampler | None = None,
    stop_ids: tuple[int, ...] = (),
    mtp_draft_tokens: int = 0,
    compile: bool = False,
) -> GenerationResult:
    """Decode up to ``max_new_tokens`` after prompts input_ids [B, S] (equal lengths).

    ``compile=True`` runs the decode steps through ``CompiledDecoder`` (torch.compile, falling back
    to the same step in eager mode if compilation fails); its compile time is reported in
    ``compile_seconds``, outside ``decode_seconds``.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids: expected a non-empty [batch, seq] tensor, got {tuple(input_ids.shape)}"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    sampler = sampler or Sampler()
    if mtp_draft_tokens:
        if model.config.mtp_layer_index is None:
            from glm52_plugin.checkpoint.validate import mtp_unavailable

            raise ValueError(f"mtp_draft_tokens: {mtp_unavailable(model.config)}")
        if input_ids.shape[0] != 1:
            raise ValueError("mtp_draft_tokens: speculative decoding supports batch size 1")
        if compile:
            raise ValueError("compile: supported for plain decoding, not with mtp_draft_tokens")
        return _speculative(model, input_ids, max_new_tokens, sampler, stop_ids, mtp_draft_tokens)
    return _plain(model, input_ids, max_new_tokens, sampler, stop_ids, compile)


def _plain(model, input_ids, max_new_tokens, sampler, stop_ids, compile=False) -> GenerationResult:
    cache = model.new_cache()
    t0 = time.perf_counter()
    tok = sampler.sample(model.run(input_ids, cache).logits[:, -1])
    t1 = time.perf_counter()
    tokens: list[list[int]] = [[t] for t in tok.tolist()]
    done = [t in stop_ids for t in tok.tolist()]
    decoder = None
    if compile and max_new_tokens > 1:
        decoder = CompiledDecoder(model, cache, input_ids.shape[1] + max_new_tokens - 1)
        t1 = time.perf_counter()  # the compile is reported in compile_seconds, not as decode
    step = decoder.step if decoder is not None else lambda t: model.run(t, cache).logits
    while not all(done) and len(tokens[0]) < max_new_tokens:
        tok = sampler.sample(step(tok[:, None])[:, -1])
        for row, t in enumerate(tok.tolist()):
            if not done[row]:
                tokens[row].append(t)
                done[row] = t in stop_ids
    result = GenerationResult(tokens, t1 - t0, time.perf_counter() - t1)
    if decoder is not None:
        result.compile_seconds, result.compiled = decoder.compile_seconds, decoder.compiled
    return result


def _speculative(model, input_ids, max_new_tokens, sampler, stop_ids, k) -> GenerationResult:
    mtp_layer = model.config.num_hidden_layers
    main_layers = range(mtp_layer)
    cache = model.new_cache()
    t0 = time.perf_counter()
    out = model.run(input_ids, cache)
    last = sampler.sample(out.logits[:, -1])  # [1]
    t1 = time.perf_counter()
    result = GenerationResult([[int(last)]], t1 - t0, 0.0, draft_tokens=k)
    emitted = result.tokens[0]
    # MTP pass inputs: hidden of position p pairs with the token at p + 1
    mtp_hidden, mtp_ids, mtp_start = out.hidden, torch.cat((input_ids[:, 1:], last[:, None]), 1), 0
    while emitted[-1] not in stop_ids and len(emitted) < max_new_tokens:
        # 1. draft k tokens: one pass over the newly verified positions, then k-1 single steps
        drafts, draft_probs = [], []
        o, topk = model.mtp(mtp_hidden, mtp_ids, mtp_start, cache)
        pos = mtp_start + mtp_ids.shape[1]  # next MTP position
        # later draft steps reuse the first pass's top-k row of its last token as it is, as
        # vLLM 0.33 (llm_base_proposer.py: set_skip_topk + compact_topk_indices) and SGLang
        # 0.5.23 (index_topk_share.py: the draft-extend seed) do: a draft query does not see the
        # draft positions written after that row, itself included. Without the flag (GLM-5 /
        # 5.1) every draft step runs the MTP indexer.
        reuse = topk[:, -1:] if model.config.index_share_for_mtp_iteration else None
        for j in range(k):
            logits = o.logits[:, -1]
            draft_probs.append(sampler.probs(logits))
            drafts.append(sampler.sample(logits))
            if j + 1 < k:
                o, _ = model.mtp(
                    o.hidden[:, -1:], drafts[-1][:, None], pos, cache, reuse_topk=reuse
                )
                pos += 1
        # 2. verify all drafts in one main-model pass over [last, d1..dk]
        n0 = cache.length
        verify = model.run(torch.cat([last[:, None]] + [d[:, None] for d in drafts], 1), cache)
        target_probs = sampler.probs(verify.logits[0])  # [k+1, V]
        accepted = 0
        new: list[int] = []
        for j, d in enumerate(drafts):
            p, q = target_probs[j], draft_probs[j][0]
            tok = int(d)
            if sampler.temperature <= 0:
                ok = p[tok] > 0
            else:
                u = torch.rand((), generator=sampler.generator)
                ok = bool(u * q[tok] <= p[tok])
            if not ok:
                residual = (p - q).clamp_min(0) if sampler.temperature > 0 else p
                residual = residual if residual.sum() > 0 else p
                new.append(_draw(residual, sampler))
                break
            new.append(tok)
            accepted += 1
        else:
            new.append(_draw(target_probs[k], sampler))  # bonus token
        result.drafted += k
        result.accepted += accepted
        result.rounds.append(accepted)
        for t in new:
            if len(emitted) >= max_new_tokens or emitted[-1] in stop_ids:
                break
            emitted.append(t)
        # 3. roll back rejected positions; MTP re-runs verified positions with main-model hidden
        cache.truncate(n0 + accepted + 1, main_layers)
        cache.layers[mtp_layer].truncate(mtp_start + mtp_ids.shape[1])
        device = input_ids.device
        last = torch.tensor([new[-1]], device=device)
        mtp_hidden = verify.hidden[:, : accepted + 1]
        mtp_ids, mtp_start = torch.tensor([new], device=device), n0
    result.decode_seconds = time.perf_counter() - t1
    return result


def _draw(p: Tensor, sampler: Sampler) -> int:
    if sampler.temperature <= 0:
        return int(p.argmax())
    return int(torch.multinomial(p / p.sum(), 1, generator=sampler.generator))
