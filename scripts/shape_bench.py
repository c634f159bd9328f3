"""Forward time of the default model by batch shape: R rows fed W tokens each, beside one row fed R x W tokens,
through the engine's own `ModelRunner` (CPU kernel as configured), every row after the same context length.

    OMP_NUM_THREADS=1 python scripts/shape_bench.py --threads 1

Prints, per shape: the fastest of `--repeats` forwards in ms, one row of as many tokens, and their ratio. This is
why adaptive control prices a verify by its shape (`adaptive.ShapeCost`), not by the tokens it feeds.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from tgi_csd import models
from tgi_csd.runner import ModelRunner
from tgi_csd.tokens import TokenSeq

SHAPES = ((4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (16, 1), (16, 2))


def fastest_forward(runner: ModelRunner, tokens: list[list[int]], rows: int, width: int, context: int,
                    repeats: int) -> float:
    """Fastest of `repeats` forwards feeding the last `width` tokens of each of the first `rows` rows."""
    seqs = [TokenSeq(t[: context + width]) for t in tokens[:rows]]
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.forward(list(range(rows)), seqs, [width] * rows)  # rolls each row back to `context` first
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--context", type=int, default=150, help="tokens already cached in every row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpu-kernel", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = models.load_model(models.resolve_model(args.model), "float32", "cpu")
    runner = ModelRunner(model, "target", args.cpu_kernel)
    rows = max(r for r, _ in SHAPES)
    longest = args.context + max(r * w for r, w in SHAPES)
    tokens = [[1 + (i + 7 * row) % (runner.vocab_size - 1) for i in range(longest)] for row in range(rows)]
    runner.add_rows(rows)
    runner.reserve(list(range(rows)), [longest] * rows)
    runner.forward(list(range(rows)), [TokenSeq(t[: args.context]) for t in tokens], [1] * rows)
    table = Table(title=f"forward ms after {args.context} cached tokens (fastest of {args.repeats})")
    for column in ("rows x tokens", "ms", "1 x same tokens", "ms", "ratio"):
        table.add_column(column, justify="right")
    for count, width in SHAPES:
        batch = fastest_forward(runner, tokens, count, width, args.context, args.repeats)
        single = fastest_forward(runner, tokens, 1, count * width, args.context, args.repeats)
        table.add_row(f"{count} x {width}", f"{batch * 1e3:.0f}", f"1 x {count * width}", f"{single * 1e3:.0f}",
                      f"{batch / single:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
