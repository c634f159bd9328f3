"""Milliseconds a verification takes for one row, greedy and sampled, per draft width (random logits, one thread).

    python scripts/verify_bench.py [--vocab 49152] [--widths 1 5 18]

Run it from another checkout (`PYTHONPATH=OTHER python scripts/verify_bench.py`) to compare versions.
"""

from __future__ import annotations

import argparse
import time

import torch

from tgi_csd.sampling import SamplingParams, UniformStream
from tgi_csd.verification import verify_greedy, verify_sampled


def millis(repeats: int, function, *args) -> float:
    function(*args)  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        function(*args)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152, help="vocabulary size (SmolLM2's by default)")
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 5, 18], help="positions verified (draft + 1)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    params = [SamplingParams(temperature=0.7, seed=0)]
    print(f"{'width':>5} {'greedy ms':>10} {'sampled ms':>11}")
    for width in args.widths:
        logits = torch.randn(1, width, args.vocab)
        drafts = [list(range(width - 1))]
        uniforms = [UniformStream(0).window(0, width)]
        greedy = millis(args.repeats, verify_greedy, logits, drafts)
        sampled = millis(args.repeats, verify_sampled, logits, drafts, params, uniforms)
        print(f"{width:5} {greedy:10.2f} {sampled:11.2f}")


if __name__ == "__main__":
    main()
