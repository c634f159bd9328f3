"""The horizontal cascade: one reviewer's draft, filled left to right by successively cheaper drafters.

It composes drafters (`drafters/base.py`); a model drafter drafts for itself with the cascade below it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tgi_csd import clock
from tgi_csd.adaptive import KController, RowPace
from tgi_csd.drafters.base import Drafter, Proposal
from tgi_csd.stats import EngineStats
from tgi_csd.tokens import TokenSeq

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Draft:
    """Per row: draft tokens, the drafter that proposed each, sampled tokens' distributions, and how many
    tokens the row was asked for (None: as many as it has)."""

    tokens: list[list[int]]
    origins: list[list[str]]
    probs: list[list[torch.Tensor | None]] | None
    asked: list[int] | None = None


class HorizontalCascade:
    """One row of the k-matrix: `segments[j] = (drafter, k_j)`; drafter j proposes up to k_j tokens
    continuing what drafters 0..j-1 proposed. Larger drafters come first (earlier positions are
    the most likely to be accepted, so they get the best drafter).

    With a `controller` the k_j are upper bounds and each `propose` uses the controller's choice.
    A later drafter with positions this call that `leads` on a row (MaG on a long suffix match)
    fills that row's whole draft (the sum of the sizes) instead; the drafters before it skip the row.

    Every proposal is screened before the reviewer sees it (`screen`): what breaks the drafting contract
    is the drafter's fault, cut away, counted in `stats.drafter_faults` and logged once per drafter and kind.
    """

    def __init__(self, reviewer: str, segments: list[tuple[Drafter, int]], stats: EngineStats,
                 vocab_size: int) -> None:
        self.reviewer = reviewer
        self.segments = [(d, k) for d, k in segments if k > 0]
        self.stats = stats
        self.vocab_size = vocab_size
        self.controller: KController | None = None
        self.sizes = [k for _, k in self.segments]

    @property
    def max_tokens(self) -> int:
        return sum(k for _, k in self.segments)

    def steer(self, controller: KController) -> None:
        """Let `controller` (over this row's drafters and bounds) choose the sizes per call."""
        self.controller = controller

    def propose(self, rows: list[int], seqs: list[TokenSeq], limits: list[int],
                pace: list[RowPace] | None = None) -> Draft:
        """Drafts of at most `min(sum(sizes), limits[i])` tokens (`pace`: the draining batch, for the controller)."""
        if self.controller is not None:
            backlog = {drafter.name: drafter.backlog(rows, seqs) for drafter, _ in self.segments}
            self.sizes = self.controller.choose(len(rows), pace, backlog, max((len(seq) for seq in seqs), default=0))
        self.stats.current_k[self.reviewer] = {d.name: k for (d, _), k in zip(self.segments, self.sizes)}
        tokens: list[list[int]] = [[] for _ in rows]
        origins: list[list[str]] = [[] for _ in rows]
        probs: list[list[torch.Tensor | None]] | None = None
        leaders = self._leaders(rows, seqs)
        budget = sum(self.sizes)
        for j, ((drafter, _), k) in enumerate(zip(self.segments, self.sizes)):
            wanted = [min(budget, limit) if leader == j else k if leader is None else 0
                      for limit, leader in zip(limits, leaders)]
            active = [i for i, want in enumerate(wanted) if want > 0 and limits[i] > len(tokens[i])]
            if not active:
                continue
            counts = [min(wanted[i], limits[i] - len(tokens[i])) for i in active]
            start = clock.now()
            proposal = drafter.propose([rows[i] for i in active], [seqs[i].extended(tokens[i]) for i in active],
                                       counts)
            proposal = self.screen(drafter.name, proposal, counts)
            seconds = clock.now() - start
            self.stats.calls[drafter.name] += 1
            self.stats.call_seconds[drafter.name] += seconds
            if self.controller is not None:
                self.controller.observe_call(drafter.name, len(active), max(counts), seconds, sum(counts),
                                             sum(len(row) for row in proposal.tokens))
            if proposal.probs is not None and probs is None:
                probs = [[None] * len(t) for t in tokens]
            for slot, i in enumerate(active):
                new = proposal.tokens[slot]
                tokens[i].extend(new)
                origins[i].extend([drafter.name] * len(new))
                if probs is not None:
                    probs[i].extend(proposal.probs[slot] if proposal.probs is not None else [None] * len(new))
                self.stats.pairs[(self.reviewer, drafter.name)].proposed += len(new)
        return Draft(tokens, origins, probs, [min(budget, limit) for limit in limits])

    def screen(self, name: str, proposal: Proposal, counts: list[int]) -> Proposal:
        """`proposal` cut to what the reviewer can verify exactly: one row per asked row, at most `counts[i]`
        tokens, ids in `[0, vocab_size)`, and each sampled token's distribution a finite, non-negative
        `[vocab_size]` vector summing to 1. A row's draft is cut before its first bad id; a row with a bad
        distribution keeps its tokens without distributions (verified by sample-and-match, still exact)."""
        rows = proposal.tokens
        if len(rows) != len(counts):
            self._fault(name, "rows", f"{len(rows)} rows for {len(counts)} asked")
            return Proposal([[] for _ in counts])
        tokens = []
        for row, count in zip(rows, counts):
            if len(row) > count:
                self._fault(name, "length", f"{len(row)} tokens where {count} were asked")
                row = row[:count]
            bad = next((j for j, t in enumerate(row) if not (isinstance(t, int) and 0 <= t < self.vocab_size)), None)
            if bad is not None:
                self._fault(name, "id", f"token id {row[bad]!r} outside [0, {self.vocab_size})")
                row = row[:bad]
            tokens.append(row)
        if proposal.probs is None:
            return Proposal(tokens)
        probs = [list(proposal.probs[i][: len(row)]) if i < len(proposal.probs) else [] for i, row in enumerate(tokens)]
        valid = self._distributions(probs)
        for i, row in enumerate(tokens):
            if len(probs[i]) != len(row) or not valid[i]:
                self._fault(name, "probs", "draft probabilities that are not distributions over the vocabulary")
                probs[i] = [None] * len(row)
        return Proposal(tokens, probs)

    def _distributions(self, probs: list[list[torch.Tensor | None]]) -> list[bool]:
        """Per row: every given q is a finite, non-negative `[vocab_size]` vector summing to 1 (checked at once)."""
        valid = [True] * len(probs)
        shaped = []
        for i, row in enumerate(probs):
            for q in row:
                if isinstance(q, torch.Tensor) and q.shape == (self.vocab_size,):
                    shaped.append((i, q))
                elif q is not None:
                    valid[i] = False
        if shaped:
            stacked = torch.stack([q for _, q in shaped]).float()
            good = torch.isfinite(stacked).all(-1) & (stacked >= 0).all(-1) & ((stacked.sum(-1) - 1).abs() < 1e-3)
            for (i, _), ok in zip(shaped, good.tolist()):
                valid[i] = valid[i] and ok
        return valid

    def _fault(self, name: str, kind: str, detail: str) -> None:
        key = f"{name}:{kind}"
        if not self.stats.drafter_faults[key]:
            log.warning("drafter %r broke the drafting contract (%s); its draft is cut there, outputs are "
                        "unaffected (counted in drafter_faults, logged once)", name, detail)
        self.stats.drafter_faults[key] += 1

    def _leaders(self, rows: list[int], seqs: list[TokenSeq]) -> list[int | None]:
        """Per row, the segment (after the first) whose drafter leads on it, else None."""
        leading = [j for j, ((drafter, _), k) in enumerate(zip(self.segments, self.sizes)) if j and k]
        if not leading or not sum(self.sizes):
            return [None] * len(rows)
        return [next((j for j in leading if self.segments[j][0].leads(row, seq)), None)
                for row, seq in zip(rows, seqs)]

    def record(self, draft: Draft, accepted: list[int]) -> None:
        """Count proposed / accepted draft tokens per drafter and per position; teach the controller."""
        for origins, count in zip(draft.origins, accepted):
            if origins:
                self.stats.drafts[self.reviewer] += 1
            for p, name in enumerate(origins):
                self.stats.positions[(self.reviewer, p)].proposed += 1
                if p < count:
                    self.stats.positions[(self.reviewer, p)].accepted += 1
                    self.stats.pairs[(self.reviewer, name)].accepted += 1
        if self.controller is not None:
            self.controller.observe_review(draft.origins, accepted, draft.asked)
