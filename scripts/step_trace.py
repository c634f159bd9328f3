"""Step by step, what an adaptive engine does at a batch size: which steps speculate, what they cost, and the
top controller's own time.

    python scripts/step_trace.py [--config examples/csd-distilled-long.yaml] [--prompts humaneval] [--chat]
        [--batch 4] [--limit 16] [--tokens 32]

One `csd-adaptive` engine (calibrated first, untimed) serves the prompts in batches. For every step that drafted
it prints the rows, the step's milliseconds, the tokens it gave, the allocation and the predicted catch-up of
the drafters it woke; then the mean milliseconds of a plain step and of the controller's `choose` per step. The
outputs are checked against the same prompts through the engine without drafters (greedy: identical).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import workload  # scripts/workload.py (python puts the script's folder on the path)

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workload.add_options(parser, REPO / "examples" / "csd-distilled-long.yaml", limit=16, tokens=32)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    from tgi_csd.bench.methods import adaptive_cascade, batches, no_speculation
    from tgi_csd.engine import Request

    config, models, prompts = workload.load(args)

    engine = models.engine(adaptive_cascade(config))
    controller = engine.top.controller
    choose = controller.choose
    choices: list[tuple[list[int], float]] = []  # per call: the allocation, predicted catch-up seconds
    choose_seconds = 0.0

    def timed_choose(*call_args, **kwargs):
        nonlocal choose_seconds
        start = time.perf_counter()
        sizes = choose(*call_args, **kwargs)
        choose_seconds += time.perf_counter() - start
        choices.append((sizes, controller.catch_up_seconds(sizes)))
        return sizes

    controller.choose = timed_choose
    outputs, plain, steps = {}, [], 0
    for chunk in batches(prompts, args.batch):
        for request in [Request(id=len(outputs) + i, prompt_ids=p, max_new_tokens=args.tokens)
                        for i, p in enumerate(chunk)]:
            engine.add_request(request)
        while engine.has_work():
            rows, seen, generated = len(engine.running), len(choices), engine.stats.generated_tokens
            start = time.perf_counter()
            for result in engine.step():
                outputs[result.id] = result.token_ids
            ms = 1e3 * (time.perf_counter() - start)
            steps += 1
            drafted = [(sizes, catch_up) for sizes, catch_up in choices[seen:] if any(sizes)]
            if drafted:
                sizes, catch_up = drafted[-1]
                tokens = engine.stats.generated_tokens - generated
                print(f"step {steps:4d}: {rows} rows, {ms:6.1f} ms, {tokens} tokens, allocation {sizes}, "
                      f"predicted catch-up {1e3 * catch_up:.0f} ms")
            elif rows and len(choices) > seen:
                plain.append(ms)
    print(f"{steps} steps; a plain step {sum(plain) / max(len(plain), 1):.1f} ms on average; the controller's "
          f"choose {1e3 * choose_seconds / max(len(choices), 1):.2f} ms a call")

    reference = models.engine(no_speculation(config))
    expected = [r.token_ids for chunk in batches(prompts, args.batch)
                for r in reference.generate([Request(prompt_ids=p, max_new_tokens=args.tokens) for p in chunk])]
    same = sum(outputs[i] == e for i, e in enumerate(expected))
    print(f"outputs identical to the engine without drafters: {same}/{len(expected)}")
    if same != len(expected):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
