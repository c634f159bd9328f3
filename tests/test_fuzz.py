"""Greedy differential fuzz (CI-sized): seeded random cascades and request mixes against HF `generate`.

`scripts/fuzz.py --cases 5000` runs the long version with the same harness (`fuzz_harness.py`).
"""

import os

import pytest
from fuzz_harness import MAX_K, Coverage, fuzz_target, make_case, reference_pool, run_case

CASES = int(os.environ.get("TGI_CSD_FUZZ_CASES", "200"))
SAMPLED_CASES = int(os.environ.get("TGI_CSD_FUZZ_SAMPLED_CASES", "100"))
FIRST_SEED = int(os.environ.get("TGI_CSD_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def target():
    return fuzz_target()


@pytest.fixture(scope="module")
def pool(target):
    return reference_pool(target, 48)


def test_greedy_fuzz_equals_target_alone(target, pool):
    total = Coverage()
    for seed in range(FIRST_SEED, FIRST_SEED + CASES):
        case = make_case(target, pool, seed)
        failures, coverage = run_case(case)
        assert not failures, f"{case.description}\n" + "\n".join(failures)
        total.merge(coverage)
    # The run as a whole must exercise what it claims to: whole drafts accepted at every draft length up
    # to MAX_K, every drafter kind and option, budgets, adaptive control, EOS and stop strings.
    missing = [n for n in range(1, MAX_K + 1) if not total.full_accepts[n]]
    assert not missing, f"no fully accepted draft of length {missing}: {dict(total.full_accepts)}"
    for feature in ["drafter:copy", "drafter:noisy", "drafter:cut", "drafter:lora", "option:sample", "option:lenient",
                    "option:confident", "mag:lead", "mag:bigram", "mag:store", "ngram", "kv-budget", "adaptive",
                    "kernel:auto", "levels:3", "stop"]:
        assert total.features[feature], f"no case with {feature}: {dict(total.features)}"
    assert {"eos", "length", "stop"} <= set(total.finish), dict(total.finish)


@pytest.mark.proof
def test_sampled_fuzz_equals_plain_sampling(target, pool):
    """Deterministic drafts under seeded sampling: every output is plain sampling's, token for token."""
    total = Coverage()
    for seed in range(FIRST_SEED, FIRST_SEED + SAMPLED_CASES):
        case = make_case(target, pool, seed, sampled=True)
        failures, coverage = run_case(case)
        assert not failures, f"{case.description}\n" + "\n".join(failures)
        total.merge(coverage)
    assert not total.features["option:sample"]
    for feature in ["drafter:copy", "drafter:noisy", "drafter:cut", "drafter:lora", "option:lenient",
                    "option:confident", "mag:lead", "ngram", "kv-budget", "adaptive", "kernel:auto"]:
        assert total.features[feature], f"no case with {feature}: {dict(total.features)}"
