"""MaG: the statistical drafter at the bottom of the cascade."""

from __future__ import annotations

from tgi_csd.drafters.base import Drafter, Proposal, RowInfo
from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.tokens import TokenSeq


class _SuffixIndex:
    """n-grams (n = 1..max_ngram) of one sequence mapped to the position where they most recently
    ended with a token after them. Grows by O(max_ngram) work per committed token."""

    __slots__ = ("ends", "indexed")

    def __init__(self) -> None:
        self.ends: dict[tuple[int, ...], int] = {}
        self.indexed = 0  # n-grams ending before this position are in `ends`

    def extend(self, history: list[int], max_ngram: int) -> None:
        ends = self.ends
        for end in range(self.indexed, len(history) - 1):
            start = max(0, end + 1 - max_ngram)
            window = history[start : end + 1]
            for n in range(1, len(window) + 1):
                ends[tuple(window[-n:])] = end
        self.indexed = max(self.indexed, len(history) - 1)


class MaGDrafter(Drafter):
    """Longest suffix match over prompt + output, copy what followed; else the bigram table.

    The *most recent* earlier occurrence of the suffix is used: in code and chat the latest
    repetition (the current loop body, the name just defined) predicts the next tokens better
    than the first one. Copying is LZ77-style, so a match that runs into the suffix itself
    continues a periodic pattern. Deterministic: no probabilities are returned.
    """

    def __init__(self, bigram: BigramTable | None, name: str = "mag", max_ngram: int = 12,
                 min_ngram: int = 1, lead_ngram: int | None = None) -> None:
        self.name = name
        self.bigram = bigram
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.lead_ngram = lead_ngram
        self.indexes: list[_SuffixIndex] = []

    def add_rows(self, infos: list[RowInfo]) -> None:
        for info in infos:
            index = _SuffixIndex()
            index.extend(info.history, self.max_ngram)
            self.indexes.append(index)

    def keep_rows(self, keep: list[int]) -> None:
        self.indexes = [self.indexes[i] for i in keep]

    def commit(self, histories: list[list[int]]) -> None:
        for index, history in zip(self.indexes, histories):
            index.extend(history, self.max_ngram)

    def _match_end(self, index: _SuffixIndex, seq: TokenSeq) -> int | None:
        tail = seq.last(self.max_ngram)
        for n in range(len(tail), self.min_ngram - 1, -1):
            end = index.ends.get(tuple(tail[len(tail) - n :]))
            if end is not None:
                return end
        return None

    def leads(self, row: int, seq: TokenSeq) -> bool:
        """A suffix match of `lead_ngram` or more tokens: copying it beats a small model's guess.
        One lookup: a longer match ends with the last `lead_ngram` tokens, which are indexed too."""
        if self.lead_ngram is None or len(seq) < self.lead_ngram:
            return False
        return tuple(seq.last(self.lead_ngram)) in self.indexes[row].ends

    def propose(self, rows: list[int], seqs: list[TokenSeq], counts: list[int]) -> Proposal:
        tokens = []
        for row, seq, count in zip(rows, seqs, counts):
            out: list[int] = []
            end = self._match_end(self.indexes[row], seq) if count > 0 else None
            if end is not None:
                length = len(seq)
                for pos in range(end + 1, end + 1 + count):
                    out.append(seq[pos] if pos < length else out[pos - length])
            elif self.bigram is not None and count > 0:
                last = seq[-1]
                for _ in range(count):
                    last = self.bigram[last]
                    out.append(last)
            tokens.append(out)
        return Proposal(tokens)
