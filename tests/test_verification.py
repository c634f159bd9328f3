"""Verification rules on hand-made logits."""

import torch

from tgi_csd.sampling import SamplingParams, sample_inverse_cdf, warp
from tgi_csd.verification import verify_greedy, verify_lenient, verify_sampled


def logits_for(best: list[list[int]], vocab: int = 8, width: int | None = None) -> torch.Tensor:
    """Right-aligned logits whose argmax at each position is `best[i][j]`."""
    width = width or max(len(b) for b in best)
    out = torch.zeros(len(best), width, vocab)
    for i, row in enumerate(best):
        for j, token in enumerate(row):
            out[i, width - len(row) + j, token] = 5.0
    return out


def test_greedy_accepts_longest_matching_prefix_plus_target_token():
    logits = logits_for([[1, 2, 3, 4], [5, 6]])
    verdict = verify_greedy(logits, [[1, 2, 7], [5]])
    assert verdict.accepted == [2, 1]
    assert verdict.tokens == [[1, 2, 3], [5, 6]]


def test_greedy_empty_draft_is_a_plain_decode_step():
    verdict = verify_greedy(logits_for([[4]]), [[]])
    assert verdict.accepted == [0] and verdict.tokens == [[4]]


def test_lenient_accepts_close_second_choice():
    logits = torch.zeros(1, 2, 4)
    logits[0, 0] = torch.tensor([2.0, 1.9, -5.0, -5.0])  # draft token 1 is a close second
    logits[0, 1, 3] = 5.0
    assert verify_greedy(logits, [[1]]).accepted == [0]
    assert verify_lenient(logits, [[1]], leniency=2.0).tokens == [[1, 3]]
    assert verify_lenient(logits, [[2]], leniency=2.0).accepted == [0]


def test_sample_and_match_equals_plain_sampling_with_same_uniforms():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    params = SamplingParams(temperature=1.0, seed=1)
    draw = torch.rand(4, dtype=torch.float64)
    plain = sample_inverse_cdf(warp(logits[0], params), draw.float()).tolist()
    # Drafting the plain samples' first two tokens: both accepted, third position differs.
    wrong = (plain[2] + 1) % 6
    verdict = verify_sampled(logits, [[plain[0], plain[1], wrong]], [params], [(draw, draw)])
    assert verdict.tokens == [plain[:3]]
    assert verdict.accepted == [2]


def test_rejection_sampling_uses_draft_probabilities():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    params = SamplingParams(temperature=1.0)
    q = torch.tensor([0.0, 1.0])  # the drafter always says 1
    # p/q = 0.5: accept iff accept-uniform < 0.5.
    low = verify_sampled(logits, [[1]], [params], [(torch.tensor([0.9, 0.1]), torch.tensor([0.4, 0.0]))], [[q]])
    high = verify_sampled(logits, [[1]], [params], [(torch.tensor([0.9, 0.1]), torch.tensor([0.6, 0.0]))], [[q]])
    assert low.accepted == [1]
    assert high.accepted == [0] and high.tokens == [[0]]  # the residual max(0, p - q) is all on token 0


def test_top_k_and_top_p_warping():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert (warp(logits, SamplingParams(temperature=1.0, top_k=2)) > 0).tolist() == [True, True, False, False]
    assert (warp(logits, SamplingParams(temperature=1.0, top_p=0.8)) > 0).tolist() == [True, True, False, False]
    assert (warp(logits, SamplingParams(temperature=1.0, top_p=0.81)) > 0).tolist() == [True, True, True, False]
