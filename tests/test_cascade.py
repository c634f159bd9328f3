"""The horizontal cascade: segments fill positions left to right; a leading drafter takes the whole draft."""

from helpers import StatelessDrafter
from tgi_csd.drafters.base import Proposal, RowInfo
from tgi_csd.drafters.cascade import HorizontalCascade
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.sampling import SamplingParams
from tgi_csd.stats import EngineStats
from tgi_csd.tokens import TokenSeq


class Constant(StatelessDrafter):
    """Proposes `token` repeatedly and records which rows it was asked for, and how many tokens."""

    name = "constant"
    neural = True

    def __init__(self, token: int) -> None:
        self.token = token
        self.asked: list[tuple[int, int]] = []

    def propose(self, rows, seqs, counts):
        self.asked.extend(zip(rows, counts))
        return Proposal([[self.token] * count for count in counts])


HISTORIES = [
    [5, 1, 2, 7, 8, 9, 3, 1, 2],  # suffix [1, 2] seen before: MaG leads with 7, 8, 9, 3
    [5, 1, 2, 7, 8, 9, 3, 4, 6],  # no match
]


def cascade(lead_ngram: int | None) -> tuple[HorizontalCascade, Constant]:
    big = Constant(60)
    mag = MaGDrafter(None, lead_ngram=lead_ngram)
    mag.add_rows([RowInfo(h, SamplingParams()) for h in HISTORIES])
    return HorizontalCascade("target", [(big, 2), (mag, 2)], EngineStats(), 64), big


def test_segments_fill_positions_in_order():
    row, big = cascade(lead_ngram=None)
    draft = row.propose([0, 1], [TokenSeq(h) for h in HISTORIES], [4, 4])
    assert big.asked == [(0, 2), (1, 2)]
    assert draft.tokens[0][:2] == [60, 60] and draft.origins[1] == ["constant", "constant"]


def test_a_leading_drafter_takes_the_whole_draft_of_its_rows_only():
    row, big = cascade(lead_ngram=2)
    draft = row.propose([0, 1], [TokenSeq(h) for h in HISTORIES], [4, 3])
    assert big.asked == [(1, 2)]  # row 0 is MaG's
    assert draft.tokens[0] == [7, 8, 9, 3] and draft.origins[0] == ["mag"] * 4
    assert draft.tokens[1][:2] == [60, 60] and len(draft.tokens[1]) <= 3


def test_leading_respects_the_limit_and_a_zero_budget():
    row, _ = cascade(lead_ngram=2)
    assert row.propose([0], [TokenSeq(HISTORIES[0])], [3]).tokens == [[7, 8, 9]]
    row.sizes = [0, 0]  # a controller turned speculation off: nobody leads
    assert row.propose([0], [TokenSeq(HISTORIES[0])], [4]).tokens == [[]]
