"""TGI's stock n-gram rule: first occurrence of the newest token in the history before the last step."""

from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq


def test_first_match_in_history_before_last_step():
    ngram = TGINGramDrafter()
    prompt_and_first = [3, 1, 4, 1, 5, 9, 1]  # prompt [3, 1, 4, 1, 5, 9], prefill gave 1
    ngram.add_rows([RowInfo(prompt_and_first, SamplingParams())])
    # Seed 1: first occurrence at index 1 of the prompt, so 4, 1, 5.
    assert ngram.propose([0], [TokenSeq(prompt_and_first)], [3]).tokens == [[4, 1, 5]]
    history = [*prompt_and_first, 4, 2, 6]  # a step accepted 4, 2, 6
    ngram.commit([history])
    # Seed 6 is not in the history before the step (7 tokens): position 0 + 1, so tokens 1..3.
    assert ngram.propose([0], [TokenSeq(history)], [3]).tokens == [[1, 4, 1]]


def test_reads_past_the_searched_history_are_clamped():
    ngram = TGINGramDrafter()
    history = [2, 7, 8, 2]
    ngram.add_rows([RowInfo(history, SamplingParams())])
    # Seed 2 first at index 0: 7, 8, then clamped to the last searched token (8).
    assert ngram.propose([0], [TokenSeq(history)], [4]).tokens == [[7, 8, 8, 8]]
