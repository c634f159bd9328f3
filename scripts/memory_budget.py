"""Drafter KV memory under a budget: many concurrent sequences through a cascade with
`drafter_kv_budget_mb`, outputs compared with the target alone, drafter KV bytes after every step.

    python scripts/memory_budget.py --config examples/csd-distilled.yaml --budget-mb 4 --sequences 64
"""

from __future__ import annotations

import argparse
import json
import time

from tgi_csd.config import load_config
from tgi_csd.engine import Engine, Request
from tgi_csd.prompts import load_prompts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--budget-mb", type=float, required=True, help="drafter_kv_budget_mb to run with")
    parser.add_argument("--sequences", type=int, default=64, help="concurrent requests (HumanEval prompts)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    budgeted = Engine.from_config(config.model_copy(update={"drafter_kv_budget_mb": args.budget_mb}))
    unbounded = Engine.from_config(config)
    plain = Engine.from_config(config.model_copy(update={"drafters": [], "k_matrix": [[]], "adaptive": None}))
    prompts = [budgeted.tokenizer(p).input_ids for p in load_prompts("humaneval", "--prompts")[: args.sequences]]
    summary: dict = {"config": args.config, "budget_mib": args.budget_mb, "sequences": len(prompts),
                     "max_new_tokens": args.max_new_tokens}
    outputs = {}
    for name, engine in (("budgeted", budgeted), ("unbounded", unbounded), ("plain", plain)):
        start = time.perf_counter()
        results = engine.generate([Request(prompt_ids=p, max_new_tokens=args.max_new_tokens) for p in prompts])
        seconds = time.perf_counter() - start
        outputs[name] = [r.token_ids for r in results]
        report = engine.report()
        summary[name] = {"seconds": round(seconds, 1), "tokens_per_target_forward": report["tokens_per_target_forward"],
                         "drafter_kv_mib": report["drafter_kv_mib"], "drafts": report["drafts"]}
    for name in ("budgeted", "unbounded"):
        summary[f"{name}_sequences_differing_from_plain"] = sum(
            a != b for a, b in zip(outputs[name], outputs["plain"]))
    peaks = [v["peak"] for v in summary["budgeted"]["drafter_kv_mib"].values()]
    summary["budget_respected_after_every_step"] = sum(peaks) <= args.budget_mb
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
