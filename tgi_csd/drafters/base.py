"""The drafting interface: propose up to k tokens for each row of a batch, then be told what stuck."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq


@dataclass(slots=True)
class RowInfo:
    """What a drafter learns about a sequence when it joins the batch."""

    history: list[int]
    params: SamplingParams


@dataclass(slots=True)
class Proposal:
    """Per row: proposed tokens and, for sampled drafts, the distribution each was drawn from.

    Invariant: `len(tokens[i]) <= counts[i]` of the request; `probs is None` means every token
    is deterministic (a function of the context alone); otherwise `probs[i][j]` is `[V]` or None.
    """

    tokens: list[list[int]]
    probs: list[list[torch.Tensor | None]] | None = None


class Drafter(ABC):
    """Proposes draft tokens. Rows are the engine's batch rows, in order.

    Invariants: `propose` never returns more than asked; drafter state follows the batch through
    `add_rows` / `keep_rows`; `commit` receives each row's committed history after every target
    step, and is the only place committed tokens are learnt (never by rescanning a history).
    """

    name: str
    #: True when proposals cost a model forward (cost-model and stats use it).
    neural: bool = False

    @abstractmethod
    def propose(self, rows: list[int], seqs: list[TokenSeq], counts: list[int]) -> Proposal:
        """Up to `counts[i]` tokens continuing `seqs[i]` for row `rows[i]`."""

    def leads(self, row: int, seq: TokenSeq) -> bool:
        """True when this drafter should fill row `row`'s whole draft itself, ahead of the larger
        drafters before it in a horizontal cascade (it expects to beat them on this context).
        Exactness does not depend on it: the reviewer verifies every draft."""
        return False

    def backlog(self, rows: list[int], seqs: list[TokenSeq]) -> list[int]:
        """Tokens of `seqs[i]` this drafter must still feed for row `rows[i]` before it drafts (a model's KV
        catch-up after steps it was not called); 0 for a drafter that reads the sequence as it is."""
        return [0] * len(rows)

    @abstractmethod
    def add_rows(self, infos: list[RowInfo]) -> None:
        """Rows appended at the end of the batch."""

    @abstractmethod
    def keep_rows(self, keep: list[int]) -> None:
        """Only rows `keep` remain, in that order."""

    @abstractmethod
    def commit(self, histories: list[list[int]]) -> None:
        """Committed histories of all rows after a target step."""
