"""The adaptive controller's view against what happened: a config's static `csd` and `csd-adaptive` at batch 1 on
the same prompts, then the target's controller's allocations and, for a few allocations, its predicted tokens
per review, seconds per step and tokens/s, next to the static run's measured ones.

    OMP_NUM_THREADS=1 python scripts/controller_view.py [--config examples/csd-mixed-long.yaml] [--prompts
        data/chat-prompts.jsonl --chat] [--limit 4] [--tokens 96] [--alloc 0,13 --alloc 4,13 ...]

For diagnosing the cost model (README, *Benchmark*: why `csd-adaptive` leaves the model drafter off at batch 1);
outputs are not checked here (`tgi-csd bench` does).
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import workload  # scripts/workload.py (python puts the script's folder on the path)

REPO = Path(__file__).resolve().parent.parent


def serve(engine, prompts: list[list[int]], tokens: int) -> dict:
    """Tokens/s, tokens per target forward, milliseconds per target forward and, per model drafter, its
    milliseconds per target forward, of `prompts` served one by one."""
    from tgi_csd.engine import Request

    engine.generate([Request(prompt_ids=prompts[0], max_new_tokens=8)])  # warm up, untimed
    drafters_before = engine.report()["seconds"]["drafters"]
    start, generated, forwards = time.perf_counter(), 0, 0
    for ids in prompts:
        result = engine.generate([Request(prompt_ids=ids, max_new_tokens=tokens)])[0]
        generated += len(result.token_ids)
        forwards += result.speculation["target_forwards"]
    seconds = time.perf_counter() - start
    drafters = {name: 1e3 * (spent - drafters_before.get(name, 0.0)) / forwards
                for name, spent in engine.report()["seconds"]["drafters"].items()}
    return {"tok/s": generated / seconds, "tokens/forward": generated / forwards, "ms/step": 1e3 * seconds / forwards,
            "drafter ms/step": drafters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workload.add_options(parser, REPO / "examples" / "csd-mixed-long.yaml", limit=4, tokens=96)
    parser.add_argument("--alloc", action="append", default=[], metavar="K,K,...",
                        help="an allocation of the target's drafters to price (default: off, the bounds, "
                             "and the last drafter alone at its bound)")
    args = parser.parse_args()

    from tgi_csd.bench.methods import adaptive_cascade, static_cascade

    config, models, prompts = workload.load(args)
    static = serve(models.engine(static_cascade(config)), prompts, args.tokens)
    engine = models.engine(adaptive_cascade(config))
    controller = engine.session.top.controller
    chosen: collections.Counter = collections.Counter()
    choose = controller.choose

    def counted(*a, **k):
        allocation = choose(*a, **k)
        chosen[tuple(allocation)] += 1
        return allocation

    controller.choose = counted
    adaptive = serve(engine, prompts, args.tokens)
    for name, row in (("static csd", static), ("csd-adaptive", adaptive)):
        print(f"{name:13} {row['tok/s']:6.1f} tok/s {row['tokens/forward']:5.2f} tokens/forward "
              f"{row['ms/step']:6.1f} ms/step, drafters' ms/step "
              f"{ {drafter: round(ms, 1) for drafter, ms in row['drafter ms/step'].items()} }")
    print("allocations chosen (steps):", ", ".join(f"{list(a)} {n}" for a, n in chosen.most_common(8)))
    print("fill:", {name: round(fill, 2) for name, fill in controller.fill.items()})
    print("price of a drafted position, ms:", {name: round(1e3 * cost.predict(1), 2)
                                               for name, cost in controller.drafter_costs.items()
                                               if cost.predict(1) is not None})
    bounds = controller.bounds
    allocations = [[int(k) for k in a.split(",")] for a in args.alloc] or [
        [0] * len(bounds), list(bounds), [0] * (len(bounds) - 1) + bounds[-1:]]
    print(f"{'allocation':14} {'tokens/review':>13} {'ms/step':>8} {'tok/s':>6}  (predicted now; static "
          f"{bounds}: {static['tokens/forward']:.2f}, {static['ms/step']:.1f} ms, {static['tok/s']:.1f})")
    for allocation in allocations:
        if len(allocation) != len(bounds) or any(not 0 <= k <= b for k, b in zip(allocation, bounds)):
            raise SystemExit(f"--alloc {allocation}: needs {len(bounds)} entries within the bounds {bounds}")
        seconds = controller.step_seconds(allocation, 1)
        rate = controller.predicted_rate(allocation, 1)
        print(f"{allocation!s:14} {controller.expected_tokens(allocation):13.2f} "
              f"{1e3 * seconds if seconds else float('nan'):8.1f} {rate or float('nan'):6.1f}")


if __name__ == "__main__":
    main()
