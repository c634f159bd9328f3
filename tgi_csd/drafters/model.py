"""A neural drafter: an HF causal LM, itself sped up by speculative decoding with the drafters below it."""

from __future__ import annotations

import zlib

import torch

from tgi_csd.drafters.base import Drafter, Proposal, RowInfo
from tgi_csd.drafters.cascade import Draft, HorizontalCascade
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq
from tgi_csd.verification import Verdict, verify_greedy, verify_lenient, verify_sampled


class ModelDrafter(Drafter):
    """Proposes what this model would generate, k tokens per row (the vertical cascade).

    Each round drafts with `below` (its own row of the k-matrix), verifies with one forward of
    this model and keeps the accepted prefix plus this model's own next token, until every row has
    its k tokens. Without `leniency` the proposals equal this model's greedy continuation (or,
    with `sample`, are exact samples of its distribution); with `leniency` they are not (lossy
    for this level only: the target still verifies exactly). With `min_confidence` a row's draft ends
    before the first token whose probability under this model is below it: a prefix of the same
    greedy continuation, possibly empty. A row whose KV cannot be resident this call (a KV budget,
    see `BudgetedKVCache`) gets no tokens: the smaller drafters draft for it. With `prefill_chunk`, a row
    whose cache lags its sequence by more than that (a joining request's prompt) is fed `prefill_chunk`
    tokens of it per call and gets no tokens until it has caught up: no call feeds a row more catch-up.
    """

    neural = True

    def __init__(self, name: str, runner: ModelRunner, below: HorizontalCascade | None = None,
                 leniency: float | None = None, sample: bool = False, min_confidence: float | None = None,
                 prefill_chunk: int | None = None) -> None:
        if min_confidence is not None and (leniency is not None or sample):
            raise ValueError("min_confidence applies to greedy drafting only")
        self.name = name
        self.runner = runner
        self.below = below
        self.leniency = leniency
        self.sample = sample
        self.min_confidence = min_confidence
        self.prefill_chunk = prefill_chunk
        self.params: list[SamplingParams] = []
        self.generators: list[torch.Generator] = []

    def add_rows(self, infos: list[RowInfo]) -> None:
        self.runner.add_rows(len(infos))
        for info in infos:
            self.params.append(info.params)
            seed = zlib.crc32(f"{info.params.seed}:{self.name}".encode())
            self.generators.append(torch.Generator().manual_seed(seed))

    def keep_rows(self, keep: list[int]) -> None:
        self.runner.keep_rows(keep)
        self.params = [self.params[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]

    def commit(self, histories: list[list[int]]) -> None:
        self.runner.commit(histories)

    def backlog(self, rows: list[int], seqs: list[TokenSeq]) -> list[int]:
        runner = self.runner
        return [len(seq) - min(runner.synced[row], runner.cache.lengths[row]) for row, seq in zip(rows, seqs)]

    def _samples(self, row: int) -> bool:
        return self.sample and not self.params[row].greedy

    def _verify(self, logits: torch.Tensor, draft: Draft, rows: list[int]) -> Verdict:
        if any(self._samples(r) for r in rows):
            uniforms = []
            for r, d in zip(rows, draft.tokens):
                g = self.generators[r]
                n = len(d) + 1
                uniforms.append((torch.rand(n, generator=g, dtype=torch.float64),
                                 torch.rand(n, generator=g, dtype=torch.float64)))
            params = [self.params[r] if self._samples(r) else SamplingParams() for r in rows]
            return verify_sampled(logits, draft.tokens, params, uniforms, draft.probs)
        if self.leniency is not None:
            return verify_lenient(logits, draft.tokens, self.leniency)
        return verify_greedy(logits, draft.tokens)

    @staticmethod
    def _top_probabilities(logits: torch.Tensor) -> list[list[float]]:
        """Each position's largest probability, exp(max - logsumexp), as one host list."""
        logits = logits.float()
        return (logits.amax(-1) - logits.logsumexp(-1)).exp().tolist()

    def _catch_up(self, rows: list[int], seqs: list[TokenSeq]) -> None:
        """Feed each row `prefill_chunk` more tokens of its sequence (rows whose KV cannot be resident wait)."""
        ends = [self.runner.synced[row] + self.prefill_chunk for row in rows]
        resident = self.runner.reserve(rows, ends)
        chosen = [i for i, ok in enumerate(resident) if ok]
        if chosen:
            self.runner.forward([rows[i] for i in chosen], [seqs[i].prefix(ends[i]) for i in chosen], [1] * len(chosen))

    def propose(self, rows: list[int], seqs: list[TokenSeq], counts: list[int]) -> Proposal:
        out: list[list[int]] = [[] for _ in rows]
        out_probs: list[list[torch.Tensor | None]] = [[] for _ in rows]
        pending = [i for i, count in enumerate(counts) if count > 0]
        unsure: set[int] = set()  # rows whose draft ended at a token below min_confidence
        if self.prefill_chunk is not None:
            lagging = {i for i in pending if len(seqs[i]) - self.runner.synced[rows[i]] > self.prefill_chunk}
            if lagging:
                self._catch_up([rows[i] for i in sorted(lagging)], [seqs[i] for i in sorted(lagging)])
                pending = [i for i in pending if i not in lagging]
        # A round feeds at most the sequence, its proposals so far and a draft: `count - 1` tokens past it.
        resident = self.runner.reserve([rows[i] for i in pending], [len(seqs[i]) + counts[i] - 1 for i in pending])
        pending = [i for i, ok in zip(pending, resident) if ok]
        while pending:
            sub_rows = [rows[i] for i in pending]
            sub_seqs = [seqs[i].extended(out[i]) for i in pending]
            wanted = [counts[i] - len(out[i]) for i in pending]
            if self.below is not None:
                draft = self.below.propose(sub_rows, sub_seqs, [w - 1 for w in wanted])
            else:
                draft = Draft([[] for _ in pending], [[] for _ in pending], None)
            logits = self.runner.forward(
                sub_rows, [s.extended(d) for s, d in zip(sub_seqs, draft.tokens)],
                [len(d) + 1 for d in draft.tokens],
            )
            verdict = self._verify(logits, draft, sub_rows)
            if self.below is not None:
                self.below.record(draft, verdict.accepted)
            confidence = None if self.min_confidence is None else self._top_probabilities(logits)
            for slot, i in enumerate(pending):
                emitted = verdict.tokens[slot][: wanted[slot]]
                if confidence is not None:
                    first = logits.shape[1] - len(draft.tokens[slot]) - 1  # right-aligned logits
                    row = confidence[slot][first : first + len(emitted)]
                    cut = next((j for j, p in enumerate(row) if p < self.min_confidence), None)
                    if cut is not None:
                        emitted = emitted[:cut]
                        unsure.add(i)
                out[i].extend(emitted)
                if verdict.probs is not None and self._samples(rows[i]):
                    out_probs[i].extend(verdict.probs[slot][: len(emitted)])
                else:
                    out_probs[i].extend([None] * len(emitted))
            pending = [i for i in pending if len(out[i]) < counts[i] and i not in unsure]
        sampled = any(p is not None for row in out_probs for p in row)
        return Proposal(out, out_probs if sampled else None)
