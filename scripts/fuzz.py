"""The long differential fuzz: `python scripts/fuzz.py --cases 5000 [--first-seed N] [--sampled]`.

The same harness as `tests/test_fuzz.py` (CI runs 200 greedy and 100 sampled cases); prints each failing
case's description and the coverage counters (fully accepted drafts by length, features, finish reasons).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz_harness import Coverage, fuzz_target, make_case, reference_pool, run_case
from rich.progress import Progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=96, help="reference prompts to draw requests from")
    parser.add_argument("--sampled", action="store_true",
                        help="seeded sampled requests under deterministic drafters, against plain sampling")
    args = parser.parse_args()
    started = time.perf_counter()
    target = fuzz_target()
    pool = reference_pool(target, args.pool)
    total, failed = Coverage(), []
    with Progress() as progress:
        task = progress.add_task("fuzz", total=args.cases)
        for seed in range(args.first_seed, args.first_seed + args.cases):
            case = make_case(target, pool, seed, sampled=args.sampled)
            failures, coverage = run_case(case)
            total.merge(coverage)
            if failures:
                failed.append(seed)
                progress.console.print(f"[red]FAIL[/red] {case.description}\n  " + "\n  ".join(failures))
            progress.advance(task)
    print(json.dumps({
        "cases": args.cases, "sampled": args.sampled, "failed_seeds": failed, "requests": total.requests,
        "seconds": round(time.perf_counter() - started),
        "full_draft_accepts_by_length": dict(sorted(total.full_accepts.items())),
        "drafts_by_length": dict(sorted(total.drafts.items())),
        "features": dict(sorted(total.features.items())), "finish_reasons": dict(total.finish),
    }, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
