"""The full soak: 2,000 requests arriving as a Poisson process over about 10,000 steps into one csd engine
with tight drafter and target KV budgets, and the same arrivals into a no-drafter engine.

    python scripts/soak.py --requests 2000 --steps 10000 --out soak-out

Prints max/median wait, RSS and KV at the start and end, their growth between the second and the last
quarter, and whether every output equals the no-drafter engine's; writes soak.json and soak.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak_harness import arrivals, csd_engine, drive, growth, plain_engine, soak_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10_000, help="arrivals spread over about this many steps")
    parser.add_argument("--drafter-kv-mb", type=float, default=0.25)
    parser.add_argument("--target-kv-mb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("soak-out"))
    args = parser.parse_args()
    target = soak_target()
    schedule = arrivals(args.requests, args.steps, args.seed)
    started = time.perf_counter()
    csd = drive(csd_engine(target, args.drafter_kv_mb, args.target_kv_mb), schedule)
    csd_seconds = time.perf_counter() - started
    plain = drive(plain_engine(target, args.target_kv_mb), schedule)
    identical = sum(csd.outputs.get(i) == plain.outputs.get(i) for i in range(args.requests))
    waits = sorted(csd.waits.values())
    mib = 2**20
    summary = {
        "requests": args.requests, "steps": csd.total_steps, "plain_steps": plain.total_steps,
        "seconds": round(csd_seconds, 1), "identical_outputs": identical,
        "wait_steps": {"max": waits[-1], "median": waits[len(waits) // 2], "p99": waits[int(len(waits) * 0.99)]},
        "rss_mib": {"start": round(csd.rss[0] / mib, 1), "end": round(csd.rss[-1] / mib, 1),
                    "max": round(max(csd.rss) / mib, 1), "growth_q2_to_q4": round(growth(csd.rss) / mib, 2)},
        "target_kv_mib": {"max": round(max(csd.target_kv) / mib, 3), "budget": args.target_kv_mb,
                          "growth_q2_to_q4": round(growth(csd.target_kv) / mib, 3)},
        "drafter_kv_mib": {"max": round(max(csd.drafter_kv) / mib, 3), "budget": args.drafter_kv_mb,
                           "growth_q2_to_q4": round(growth(csd.drafter_kv) / mib, 3)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(csd.steps, [r / mib for r in csd.rss], label="RSS (MiB)")
    top.set_ylabel("MiB")
    top.legend()
    bottom.plot(csd.steps, [b / mib for b in csd.target_kv], label="target KV (MiB)")
    bottom.plot(csd.steps, [b / mib for b in csd.drafter_kv], label="drafter KV (MiB)")
    bottom.axhline(args.target_kv_mb, linestyle="--", color="C0", linewidth=0.8)
    bottom.axhline(args.drafter_kv_mb, linestyle="--", color="C1", linewidth=0.8)
    bottom.set_xlabel("engine step")
    bottom.set_ylabel("MiB")
    bottom.legend()
    figure.suptitle(f"soak: {args.requests} Poisson arrivals, {identical}/{args.requests} outputs identical")
    figure.tight_layout()
    figure.savefig(args.out / "soak.png", dpi=120)
    if identical != args.requests:
        sys.exit(f"{args.requests - identical} outputs differ from the no-drafter engine")


if __name__ == "__main__":
    main()
