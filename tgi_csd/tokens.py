"""A token sequence seen as committed history plus a tentative tail, without copying the history."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenSeq:
    """`history + tail`. `history` is the sequence's committed token list, shared, never mutated here."""

    history: list[int]
    tail: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.history) + len(self.tail)

    def __getitem__(self, index: int) -> int:
        n = len(self.history)
        if index < 0:
            index += n + len(self.tail)
        return self.history[index] if index < n else self.tail[index - n]

    def suffix(self, start: int) -> list[int]:
        """Tokens from `start` to the end (a copy; cost O(len - start))."""
        n = len(self.history)
        if start >= n:
            return self.tail[start - n:]
        return self.history[start:] + self.tail

    def extended(self, more: list[int]) -> TokenSeq:
        """This sequence followed by `more` (copies only the tail)."""
        return TokenSeq(self.history, self.tail + more)

    def prefix(self, count: int) -> TokenSeq:
        """The first `count` tokens (copies them)."""
        n = len(self.history)
        return TokenSeq(self.history[:count]) if count <= n else TokenSeq(self.history, self.tail[:count - n])

    def last(self, count: int) -> list[int]:
        """The last `count` tokens (fewer if the sequence is shorter)."""
        return self.suffix(max(0, len(self) - count))
