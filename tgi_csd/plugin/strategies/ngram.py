"""`ngram`: TGI's stock n-gram speculation, as a strategy loaded through the plugin path.

Row by row, the algorithm of TGI 3.3.7's `create_n_gram_speculation` (utils/tokens.py): the seed
is the newest accepted token; find its *first* occurrence in the history as it was before this
step; propose the S tokens that followed (no occurrence: tokens 1..S of the prompt); positions
past the searched history repeat its last token. At batch size 1 this is exactly TGI's proposal;
in a batch TGI reads zero padding past a shorter request's end instead (its rows are padded to
the longest), which this strategy does not imitate. Stateless.
"""

from __future__ import annotations

from tgi_csd.drafters.ngram import first_match
from tgi_csd.plugin.hookspecs import hookimpl


def ngram_proposal(history: list[int], accepted: int, speculate: int) -> list[int]:
    """TGI's proposal for one request whose last step accepted `accepted` tokens."""
    return first_match(history, history[-1], max(len(history) - accepted, 1), speculate)


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
