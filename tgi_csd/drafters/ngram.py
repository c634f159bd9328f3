"""TGI's stock n-gram speculation (`create_n_gram_speculation`, TGI 3.3.7): the rule, and a drafter using it.

`first_match` is the one copy of the rule: this drafter and the `ngram` strategy both call it, and
`tests/test_ngram.py` pins it to TGI's own function, read from TGI's source archive.
"""

from __future__ import annotations

from tgi_csd.drafters.base import Drafter, Proposal, RowInfo
from tgi_csd.tokens import TokenSeq


def first_match(history: list[int], seed: int, searched: int, count: int) -> list[int]:
    """TGI's proposal at batch size 1: find the first occurrence of `seed` (the newest token) in the first
    `searched` tokens of `history` (the history before the last step; at least 1); propose the `count` tokens
    after it (none found: tokens 1..count); reads past `searched` repeat its last token."""
    try:
        start = history.index(seed, 0, searched) + 1
    except ValueError:
        start = 1
    return [history[min(start + i, searched - 1)] for i in range(count)]


class TGINGramDrafter(Drafter):
    """First match of the last token in the history *before the last step*, copy what followed.

    Mirrors TGI at batch size 1: the seed is the newest token; the search runs over the history
    as it was before the last target step; no match means position 0, so tokens 1..k of the
    prompt; reads past the searched history are clamped to its last token.
    """

    def __init__(self, name: str = "ngram") -> None:
        self.name = name
        self.searched: list[int] = []  # per row: history length before the last step
        self.lengths: list[int] = []  # per row: history length after the last step

    def add_rows(self, infos: list[RowInfo]) -> None:
        # TGI proposes right after prefill, searching the prompt alone.
        self.searched.extend(len(info.history) - 1 for info in infos)
        self.lengths.extend(len(info.history) for info in infos)

    def keep_rows(self, keep: list[int]) -> None:
        self.searched = [self.searched[i] for i in keep]
        self.lengths = [self.lengths[i] for i in keep]

    def commit(self, histories: list[list[int]]) -> None:
        self.searched = self.lengths
        self.lengths = [len(h) for h in histories]

    def propose(self, rows: list[int], seqs: list[TokenSeq], counts: list[int]) -> Proposal:
        tokens = []
        for row, seq, count in zip(rows, seqs, counts):
            searched = max(1, min(self.searched[row], len(seq.history)))
            tokens.append(first_match(seq.history, seq[-1], searched, count))
        return Proposal(tokens)
