"""The full sampling proof: `python scripts/sampling_proof.py --samples 40000 --mutant-samples 10000`.

For each setup of `tests/sampling_proof.py` (drafts of 2-6 tokens, a two-level sampled cascade and
deterministic drafts, T 0.7 / 1.3, top-k, top-p): Pearson's test of the joint of tokens 1-6 against the
exact distribution, with N, degrees of freedom and p, at a Bonferroni-corrected family-wise alpha of 1e-3;
then every verifier mutant (in the target and in the drafter) with its p. Exit code 1 when a setup fails
or a mutant survives (p >= 1e-6).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sampling_proof import (
    MUTANTS,
    SETUPS,
    chi_square,
    exact_joint,
    mutant,
    patch_verifier,
    proof_target,
    sample_counts,
)
from test_sampling import ALPHA, MUTANT_SETUP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--mutant-samples", type=int, default=10_000)
    args = parser.parse_args()
    target = proof_target()
    setups, mutants, ok = [], [], True
    for setup in SETUPS:
        sampled = sample_counts(target, setup, args.samples)
        p, dof = chi_square(sampled.counts, exact_joint(target, setup.params))
        passed = p > ALPHA / len(SETUPS)
        ok &= passed
        setups.append({"setup": setup.name, "N": args.samples, "dof": dof, "p": p, "passed": passed,
                       "accepted_by_position": sampled.accepted, "proposed_by_position": sampled.proposed})
        print(json.dumps(setups[-1]), flush=True)
    exact = exact_joint(target, MUTANT_SETUP.params)
    for name, (original, replacement) in sorted(MUTANTS.items()):
        for where in ("target", "drafter"):
            with pytest.MonkeyPatch.context() as monkeypatch:
                patch_verifier(monkeypatch, mutant(original, replacement), where)
                p, dof = chi_square(sample_counts(target, MUTANT_SETUP, args.mutant_samples).counts, exact)
            caught = p < 1e-6
            ok &= caught
            mutants.append({"mutant": name, "in": where, "N": args.mutant_samples, "dof": dof, "p": p,
                            "caught": caught})
            print(json.dumps(mutants[-1]), flush=True)
    print(json.dumps({"alpha_per_setup": ALPHA / len(SETUPS), "all_passed": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
