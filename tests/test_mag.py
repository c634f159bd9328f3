"""MaG: longest suffix match, most recent occurrence, LZ77 copy, bigram fallback, incremental index."""

import numpy as np

from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq


def mag_for(history: list[int], bigram: BigramTable | None = None, **kwargs) -> MaGDrafter:
    mag = MaGDrafter(bigram, **kwargs)
    mag.add_rows([RowInfo(history, SamplingParams())])
    return mag


def test_most_recent_occurrence_of_longest_suffix():
    #            0  1  2  3  4  5  6  7  8  9 10 11
    history = [5, 1, 2, 7, 9, 1, 2, 8, 3, 4, 1, 2]
    mag = mag_for(history)
    # Suffix [1, 2] occurs at 1-2 (then 7) and 5-6 (then 8): the most recent wins.
    assert mag.propose([0], [TokenSeq(history)], [2]).tokens == [[8, 3]]


def test_longer_suffix_beats_more_recent_shorter_one():
    history = [9, 1, 2, 6, 6, 3, 2, 7, 7, 9, 1, 2]
    mag = mag_for(history)
    # [9, 1, 2] matched at 0-2 (then 6); [2] alone would match position 6 (then 7).
    assert mag.propose([0], [TokenSeq(history)], [2]).tokens == [[6, 6]]


def test_copy_runs_into_the_suffix_periodically():
    history = [4, 1, 2, 3, 1, 2, 3]
    mag = mag_for(history)
    assert mag.propose([0], [TokenSeq(history)], [6]).tokens == [[1, 2, 3, 1, 2, 3]]


def test_tentative_tail_is_matched_against_committed_history():
    history = [1, 2, 3, 4, 5, 9]
    mag = mag_for(history)
    # The tail [2, 3] (drafted above) is the suffix: continue with 4, 5.
    assert mag.propose([0], [TokenSeq(history, [2, 3])], [2]).tokens == [[4, 5]]


def test_bigram_fallback_and_no_bigram():
    table = BigramTable(np.array([1, 2, 3, 0, 0, 0, 0, 0, 0, 0]), "fp")
    history = [7, 8, 0]
    assert mag_for(history, table).propose([0], [TokenSeq(history)], [3]).tokens == [[1, 2, 3]]
    assert mag_for(history, None).propose([0], [TokenSeq(history)], [3]).tokens == [[]]


def test_commit_indexes_only_new_tokens_and_rows_follow_batch():
    mag = MaGDrafter(None)
    mag.add_rows([RowInfo([1, 2, 3], SamplingParams()), RowInfo([4, 5], SamplingParams())])
    h0, h1 = [1, 2, 3, 1], [4, 5, 4]
    mag.commit([h0, h1])
    assert mag.indexes[0].indexed == 3 and mag.indexes[1].indexed == 2
    mag.keep_rows([1])
    assert mag.propose([0], [TokenSeq(h1)], [2]).tokens == [[5, 4]]


def test_max_ngram_bounds_the_index():
    history = list(range(40))
    mag = mag_for(history, max_ngram=3)
    assert max(len(k) for k in mag.indexes[0].ends) == 3


def test_min_ngram_refuses_short_matches():
    history = [1, 5, 2, 5]
    assert mag_for(history, min_ngram=2).propose([0], [TokenSeq(history)], [1]).tokens == [[]]
    assert mag_for(history, min_ngram=1).propose([0], [TokenSeq(history)], [1]).tokens == [[2]]


def test_leads_only_on_a_suffix_match_of_lead_ngram_tokens():
    history = [5, 1, 2, 7, 9, 3, 1, 2]
    mag = mag_for(history, lead_ngram=2)
    assert mag.leads(0, TokenSeq(history))  # [1, 2] matched
    assert not mag.leads(0, TokenSeq(history, [4]))  # [4] was never seen
    assert not mag.leads(0, TokenSeq(history, [3]))  # [2, 3] unseen; [3] alone is too short
    assert not mag_for(history).leads(0, TokenSeq(history))  # lead_ngram unset: never leads
