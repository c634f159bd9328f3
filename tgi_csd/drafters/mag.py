"""MaG: the statistical drafter at the bottom of the cascade."""

from __future__ import annotations

from tgi_csd.drafters.base import Drafter, Proposal, RowInfo
from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.drafters.suffix_store import SuffixStore
from tgi_csd.tokens import TokenSeq

#: Where a row's draft came from: its own history, the store of recent requests, the bigram table, nowhere.
SOURCES = ("own", "store", "bigram", "none")


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
    """Longest suffix match over prompt + output, copy what followed; where (with a `store`) recent requests
    know a longer context than the request's own history, what followed it there instead; else the bigram
    table. `sources` counts drafted rows by where the draft came from; `remember` puts a finished request's
    tokens in the store.

    The *most recent* earlier occurrence of the suffix is used: in code and chat the latest
    repetition (the current loop body, the name just defined) predicts the next tokens better
    than the first one. Copying is LZ77-style, so a match that runs into the suffix itself
    continues a periodic pattern. Deterministic: no probabilities are returned.
    """

    def __init__(self, bigram: BigramTable | None, name: str = "mag", max_ngram: int = 12,
                 min_ngram: int = 1, lead_ngram: int | None = None, store: SuffixStore | None = None) -> None:
        self.name = name
        self.bigram = bigram
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.lead_ngram = lead_ngram
        self.store = store
        self.indexes: list[_SuffixIndex] = []
        self.sources = dict.fromkeys(SOURCES, 0)

    def remember(self, history: list[int]) -> None:
        """A request finished: its tokens join the store (no store: nothing)."""
        if self.store is not None:
            self.store.add(history)

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

    def _match(self, index: _SuffixIndex, seq: TokenSeq) -> tuple[int | None, int]:
        """Where the longest suffix of `seq` last ended earlier in it, and that suffix's length (0: none)."""
        tail = seq.last(self.max_ngram)
        for n in range(len(tail), self.min_ngram - 1, -1):
            end = index.ends.get(tuple(tail[len(tail) - n :]))
            if end is not None:
                return end, n
        return None, 0

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
            if count <= 0:
                tokens.append(out)
                continue
            end, matched = self._match(self.indexes[row], seq)
            source = "store"
            if self.store is not None:  # recent requests, where they know a longer context than the request does
                out = self.store.lookup(seq.last(self.store.max_ngram), count, longer_than=matched)
            if not out and end is not None:
                length, source = len(seq), "own"
                for pos in range(end + 1, end + 1 + count):
                    out.append(seq[pos] if pos < length else out[pos - length])
            if not out and self.bigram is not None:
                last, source = seq[-1], "bigram"
                for _ in range(count):
                    last = self.bigram[last]
                    out.append(last)
            self.sources[source if out else "none"] += 1
            tokens.append(out)
        return Proposal(tokens)
