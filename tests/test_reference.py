"""The exactness oracle's sampled comparison: a difference is a near-tie only where the draw sat at a slice's edge."""

import pytest
import torch

from helpers import build_engine, tiny_llama
from tgi_csd.engine import Request
from tgi_csd.reference import Agreement, compare_sampled, draw_margin
from tgi_csd.sampling import SamplingParams


def test_draw_margin_is_the_distance_to_the_nearest_edge_of_the_tokens_slice():
    probs = torch.tensor([0.2, 0.3, 0.5])
    assert draw_margin(probs, 0.49, 1) == pytest.approx(0.01)
    assert draw_margin(probs, 0.21, 1) == pytest.approx(0.01)
    assert draw_margin(probs, 0.10, 1) == pytest.approx(-0.10)  # outside: the draw belongs to token 0
    assert draw_margin(probs * 2, 0.49, 1) == pytest.approx(0.02)  # unnormalised: the draw scales with the total


def test_compare_sampled_counts_a_difference_as_a_near_tie_only_within_tolerance():
    target = tiny_llama(seed=3, init=0.3)
    params = SamplingParams(temperature=1.0, seed=11)
    prompt = [1, 2, 3, 4]
    plain = build_engine(target, "none").generate([Request(prompt_ids=prompt, max_new_tokens=12, params=params)])
    reference = plain[0].token_ids
    assert compare_sampled(list(reference), reference, target, prompt, params, 1e-5) == (Agreement.IDENTICAL, None)
    changed = [*reference[:5], (reference[5] + 1) % 64, *reference[6:]]
    # The reference's own draw lies inside its token's slice, by some margin in (0, 1]: a tolerance above 1 makes
    # every first difference a near-tie, a tolerance of 0 none.
    assert compare_sampled(changed, reference, target, prompt, params, 1.01) == (Agreement.NEAR_TIE, 5)
    assert compare_sampled(changed, reference, target, prompt, params, 0.0) == (Agreement.MISMATCH, 5)
    assert compare_sampled(reference[:8], reference, target, prompt, params, 1.01) == (Agreement.MISMATCH, 8)


def test_sample_and_match_output_agrees_with_plain_sampling_under_compare_sampled():
    target = tiny_llama(seed=3, init=0.3)
    prompt = [5, 6, 7, 5, 6, 7, 5, 6]
    for seed in range(4):
        params = SamplingParams(temperature=0.8, seed=seed)
        plain = build_engine(target, "none").generate([Request(prompt_ids=prompt, max_new_tokens=16, params=params)])
        drafted = build_engine(target, "csd-lead").generate([Request(prompt_ids=prompt, max_new_tokens=16,
                                                                     params=params)])
        agreement, _ = compare_sampled(drafted[0].token_ids, plain[0].token_ids, target, prompt, params, 1e-5)
        assert agreement is not Agreement.MISMATCH
