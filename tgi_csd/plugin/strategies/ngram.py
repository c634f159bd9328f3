"""`ngram`: TGI's stock n-gram speculation, as a strategy loaded through the plugin path.

Row by row, the algorithm of TGI 3.3.7's `create_n_gram_speculation` (utils/tokens.py): the seed
is the newest accepted token; find its *first* occurrence in the history as it was before this
step; propose the S tokens that followed (no occurrence: tokens 1..S of the prompt); positions
past the searched history repeat its last token. At batch size 1 this is exactly TGI's proposal;
in a batch TGI reads zero padding past a shorter request's end instead (its rows are padded to
the longest), which this strategy does not imitate. Stateless.
"""

from __future__ import annotations

from tgi_csd.plugin.hookspecs import hookimpl


def ngram_proposal(history: list[int], accepted: int, speculate: int) -> list[int]:
    searched = max(len(history) - accepted, 1)
    seed = history[-1]
    try:
        start = history.index(seed, 0, searched) + 1
    except ValueError:
        start = 1
    last = searched - 1
    return [history[min(start + i, last)] for i in range(speculate)]


class NGramStrategy:
    def __init__(self) -> None:
        self.steps = 0

    @hookimpl
    def tgi_speculation_propose(self, histories, accepted, speculate):
        self.steps += 1
        return [ngram_proposal(h, n, speculate) for h, n in zip(histories, accepted)]

    @hookimpl
    def tgi_speculation_stats(self):
        return {"proposal_steps": self.steps}


@hookimpl
def tgi_speculation_create(speculate):
    return NGramStrategy()
