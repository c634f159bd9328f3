"""A bounded memory of recent requests' tokens that MaG drafts from across requests.

Production traffic repeats itself across requests (code idioms, tool-call formats, retries and edits of
earlier answers). The store keeps the token sequences of requests that finished, most recent last, and an
index from every n-gram (`min_ngram`..`max_ngram` tokens) of them to what followed it: per next token, how
often it followed and in which sequence and position it last did.

A lookup takes the longest suffix of the request that the index knows (MaG asks only for one longer than
its match in the request's own history), scores each next token by its count
weighted by recency (a sequence's weight halves every `half_life` sequences stored after it), and drafts
only when the best token's share of the scores reaches `min_confidence`; then it copies what followed that
token's latest occurrence, as many tokens as the confidence buys (`count * share`, at least one). No draft
rather than a bad one. A lookup costs O(max_ngram) dictionary probes, O(MAX_NEXT) to score and O(k) copied
tokens: it does not grow with the store.

Memory: each stored token and each index entry is charged a fixed size (`TOKEN_BYTES`, `ENTRY_BYTES`, the
CPython costs measured by `tests/test_suffix_store.py`); when a new sequence would pass `memory_mb`, the
oldest sequences (`eviction: fifo`) or the least recently drafted from (`lru`) go first, with their index
entries. Only token statistics are shared between requests; nothing else of a request is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: The charged CPython cost of one stored token (a list slot) and of one index entry (an n-gram key in the
#: index dict, its small per-next-token dict and one counter record); measured, see the test.
TOKEN_BYTES = 8
ENTRY_BYTES = 400
#: Next tokens kept per n-gram (the rarest is dropped for a new one): a lookup's cost stays bounded.
MAX_NEXT = 8


@dataclass(slots=True)
class _Next:
    """One next token of one n-gram: how often it followed, and where it last did."""

    count: float
    sequence: int
    position: int  # index in that sequence of the next token


@dataclass
class StoreStats:
    sequences: int = 0
    tokens: int = 0
    entries: int = 0
    evicted: int = 0
    lookups: int = 0
    hits: int = 0
    drafted: int = 0


@dataclass
class SuffixStore:
    """Invariants: `charged_bytes <= budget_bytes` after every `add`; every index entry points into a stored
    sequence; `lookup` never returns more than asked, and nothing below `min_confidence`."""

    memory_mb: float = 16.0
    max_ngram: int = 8
    min_ngram: int = 2
    min_confidence: float = 0.5
    half_life: int = 1000
    eviction: str = "fifo"
    sequences: OrderedDict[int, list[int]] = field(default_factory=OrderedDict)
    index: dict[tuple[int, ...], dict[int, _Next]] = field(default_factory=dict)
    stats: StoreStats = field(default_factory=StoreStats)
    _next_id: int = 0

    @property
    def budget_bytes(self) -> int:
        return int(self.memory_mb * 2**20)

    @property
    def charged_bytes(self) -> int:
        return self.stats.tokens * TOKEN_BYTES + self.stats.entries * ENTRY_BYTES

    # -- feeding --------------------------------------------------------------------------------------
    def add(self, tokens: list[int]) -> None:
        """Remember a finished request's tokens (prompt and output), evicting to stay within the budget."""
        if len(tokens) <= self.min_ngram:
            return
        tokens = list(tokens)
        cost = len(tokens) * TOKEN_BYTES + len(tokens) * (self.max_ngram - self.min_ngram + 1) * ENTRY_BYTES
        if cost > self.budget_bytes:
            return  # larger than the whole store: never kept
        while self.sequences and self.charged_bytes + cost > self.budget_bytes:
            self._evict()
        sequence = self._next_id
        self._next_id += 1
        self.sequences[sequence] = tokens
        self.stats.sequences += 1
        self.stats.tokens += len(tokens)
        for end in range(self.min_ngram - 1, len(tokens) - 1):
            following = tokens[end + 1]
            for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
                key = tuple(tokens[end + 1 - n : end + 1])
                nexts = self.index.get(key)
                if nexts is None:
                    nexts = self.index[key] = {}
                record = nexts.get(following)
                if record is None:
                    if len(nexts) >= MAX_NEXT:  # keep a key's candidates bounded: the rarest goes
                        del nexts[min(nexts, key=lambda t: nexts[t].count)]
                        self.stats.entries -= 1
                    nexts[following] = _Next(1.0, sequence, end + 1)
                    self.stats.entries += 1
                else:
                    record.count += 1.0
                    record.sequence, record.position = sequence, end + 1

    def _evict(self) -> None:
        sequence, tokens = self.sequences.popitem(last=False)
        self.stats.sequences -= 1
        self.stats.tokens -= len(tokens)
        self.stats.evicted += 1
        for end in range(self.min_ngram - 1, len(tokens) - 1):
            following = tokens[end + 1]
            for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
                key = tuple(tokens[end + 1 - n : end + 1])
                nexts = self.index.get(key)
                record = None if nexts is None else nexts.get(following)
                if record is None:
                    continue
                record.count -= 1.0
                if record.count <= 0 or record.sequence == sequence:
                    # gone, or its latest occurrence was this sequence's: drop it (an older occurrence of a
                    # still-stored sequence is not tracked; its count alone would point nowhere)
                    del nexts[following]
                    self.stats.entries -= 1
                    if not nexts:
                        del self.index[key]

    # -- drafting -------------------------------------------------------------------------------------
    def lookup(self, tail: list[int], count: int, longer_than: int = 0) -> list[int]:
        """Up to `count` tokens continuing `tail` (its last `max_ngram` tokens suffice) from a context of more
        than `longer_than` tokens, or none."""
        if count <= 0:
            return []
        self.stats.lookups += 1
        for n in range(min(self.max_ngram, len(tail)), max(self.min_ngram, longer_than + 1) - 1, -1):
            nexts = self.index.get(tuple(tail[len(tail) - n :]))
            if nexts:
                return self._draft(nexts, count)
        return []

    def _draft(self, nexts: dict[int, _Next], count: int) -> list[int]:
        newest = self._next_id - 1
        scores = {token: r.count * 0.5 ** ((newest - r.sequence) / self.half_life) for token, r in nexts.items()}
        best = max(scores, key=scores.__getitem__)
        share = scores[best] / sum(scores.values())
        if share < self.min_confidence:
            return []
        record = nexts[best]
        tokens = self.sequences[record.sequence]
        if self.eviction == "lru":
            self.sequences.move_to_end(record.sequence)
        length = max(1, round(count * share))
        out = tokens[record.position : record.position + length]
        self.stats.hits += 1
        self.stats.drafted += len(out)
        return out
