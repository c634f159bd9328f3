"""Forward time of the default model over 1-32 new tokens (300 tokens of KV cache), torch's linear
layers against `tgi_csd.small_rows`, with the logits compared at every size.

    OMP_NUM_THREADS=1 python scripts/kernel_bench.py --threads 1 [--lanes 8,16,0]

Prints the kernel's width plan (`small_rows.lane_plan`), then per size: median ms with torch, median ms with
the kernel at each vector width asked (8 is the AVX2 path, 16 AVX-512, 0 and the default the width the plan
picks for that size), and per width the max |logit difference| from torch and
whether every position's argmax agrees. Exit status 1 if an argmax differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from tgi_csd import models
from tgi_csd.small_rows import SmallRowsLinear


def timed_forward(model, ids, cache, mode: SmallRowsLinear | None, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of `repeats` forwards of `ids` on top of `cache` (cropped back after each), and the logits."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode is None:
            logits = model(ids, past_key_values=cache, use_cache=True).logits
        else:
            with mode:
                logits = model(ids, past_key_values=cache, use_cache=True).logits
        seconds.append(time.perf_counter() - start)
        cache.crop(-ids.shape[1])
    return statistics.median(seconds), logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--sizes", default="1,2,4,8,13,16,32")
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lanes", default="0",
                        help="comma list of kernel vector widths: 8, 16, 0 = the planned one per size")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = models.load_model(models.resolve_model(args.model))
    mode = SmallRowsLinear(min_rows=1)  # every size through the kernel, 1 included, to compare
    Console().print(f"width plan (rows 1-{len(mode.lanes)}): {' '.join(map(str, mode.lanes))}")
    mode.install(model)
    kernel = mode.kernel
    widths = [int(w) for w in args.lanes.split(",")]
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    table = Table(title=f"{args.model}: forward over N new tokens, {args.context} cached, "
                        f"{torch.get_num_threads()} thread(s)")
    columns = ["N", "torch ms"]
    for w in widths:
        name = f"kernel {w or 'planned'}"
        columns += [f"{name} ms", f"{name} / torch", "max |logit diff|", "argmax equal"]
    for column in columns:
        table.add_column(column, justify="right")
    all_equal = True
    with torch.inference_mode():
        cache = model(torch.randint(0, vocab, (1, args.context), generator=generator), use_cache=True).past_key_values
        for size in (int(s) for s in args.sizes.split(",")):
            ids = torch.randint(0, vocab, (1, size), generator=generator)
            timed_forward(model, ids, cache, None, 1)  # warm-up
            base, base_logits = timed_forward(model, ids, cache, None, args.repeats)
            row = [str(size), f"{base * 1e3:.1f}"]
            for w in widths:
                mode.kernel = lambda x, weight, bias, planned, w=w: kernel(x, weight, bias, w or planned)
                fast, fast_logits = timed_forward(model, ids, cache, mode, args.repeats)
                equal = bool((base_logits.argmax(-1) == fast_logits.argmax(-1)).all())
                all_equal &= equal
                row += [f"{fast * 1e3:.1f}", f"{fast / base:.2f}",
                        f"{(base_logits - fast_logits).abs().max().item():.1e}", "yes" if equal else "NO"]
            table.add_row(*row)
    Console().print(table)
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
