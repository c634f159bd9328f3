"""Per-request speculation profiles on a mixed workload: HumanEval code and chat questions served together.

    python scripts/profile_bench.py [--config examples/csd-profiles.yaml] [--code 10] [--chat 10] [--tokens 96]
    python scripts/profile_bench.py --code-start 10 --chat-start 10 --select FIRST.json   # held out
    python scripts/profile_bench.py --config examples/csd-profiles-lead.yaml --chat-temperature 0.7

Each setting serves the same mixed prompts (code first, then chat, interleaved) through one engine at batch 1:
every request on one server-wide setting (`auto` and each configured profile), then per request, code prompts
on `--code-profile` and chat prompts on `--chat-profile`, or with `--select` on the setting that made the most
tokens per target forward on that workload in another run (its `--out`, on other prompts). Chat prompts get the
target's chat template. It prints tokens per target forward and tokens/s per workload and overall, and checks
every output against the target alone: greedy ones against transformers (float32: identical, or different first
at a near-tie below 1e-3, counted). With `--chat-temperature` chat requests sample (seed: the request's index):
drafted deterministically they are verified by sample-and-match, which keeps the seed's output, so each must equal
the target's plain sampling with that seed, or differ first where the draw lies within 1e-5 of an edge of the
token's slice of the cumulative distribution (counted as a near-tie). A config whose drafters sample (`sample:
true`) keeps the target's distribution but not the seed's tokens (tests/sampling_proof.py); its sampled requests
are counted, not compared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def single_settings(figures: dict) -> dict:
    """The rows of `figures` (this script's results) that served every request on one speculating setting."""
    return {name: row for name, row in figures.items() if name not in ("per request", "off")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "csd-profiles.yaml")
    parser.add_argument("--code", type=int, default=10, help="HumanEval prompts")
    parser.add_argument("--chat", type=int, default=10, help="prompts from data/chat-prompts.jsonl")
    parser.add_argument("--tokens", type=int, default=96, help="new tokens per request")
    parser.add_argument("--code-start", type=int, default=0, help="first HumanEval prompt")
    parser.add_argument("--chat-start", type=int, default=0, help="first chat prompt")
    parser.add_argument("--code-profile", default="code")
    parser.add_argument("--chat-profile", default="chat")
    parser.add_argument("--select", type=Path, help="take both profiles from this earlier run's --out: per workload "
                                                    "its best single setting in tokens per target forward")
    parser.add_argument("--chat-temperature", type=float, default=0.0, help="sample chat requests (0: greedy)")
    parser.add_argument("--chat-top-p", type=float, default=1.0, help="nucleus mass for sampled chat requests")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    import torch

    from tgi_csd.bench.loading import BenchModels
    from tgi_csd.config import load_config
    from tgi_csd.engine import Request
    from tgi_csd.prompts import humaneval, load_prompts
    from tgi_csd.reference import Agreement, compare, compare_sampled, reference_generate
    from tgi_csd.sampling import SamplingParams

    torch.set_num_threads(args.threads)
    if args.select:
        single = single_settings(json.loads(args.select.read_text()))
        args.code_profile, args.chat_profile = (max(single, key=lambda name: single[name][kind]["tokens_per_forward"])
                                                for kind in ("code", "chat"))
    config = load_config(args.config)
    models = BenchModels(config)
    code = [("code", models.encode(p)) for p in humaneval(args.code_start, args.code_start + args.code)]
    chat = [("chat", models.encode(q, chat=True))
            for q in load_prompts(str(REPO / "data" / "chat-prompts.jsonl"))[args.chat_start:][: args.chat]]
    order = [p for pair in itertools.zip_longest(code, chat) for p in pair if p is not None]  # code, chat, ...
    params = [SamplingParams(temperature=args.chat_temperature, top_p=args.chat_top_p, seed=i)
              if kind == "chat" else SamplingParams() for i, (kind, _) in enumerate(order)]
    plain = models.engine(config)
    refs = [reference_generate(models.target, ids, args.tokens, models.eos_token_id) if param.greedy else
            plain.generate([Request(prompt_ids=ids, max_new_tokens=args.tokens, params=param, speculation="off")])[0]
            .token_ids for (_, ids), param in zip(order, params)]
    drafts_sample = any(getattr(drafter, "sample", False) for drafter in config.drafters)

    def agreement(candidate: list[int], ref, ids: list[int], param: SamplingParams, choice: str) -> Agreement | None:
        """How an output agrees with its reference; None: a sampled draft's, exact in distribution only."""
        if param.greedy:
            return compare(candidate, ref, 1e-3)[0]
        if drafts_sample and choice != "off":
            return None
        return compare_sampled(candidate, ref, models.target, ids, param, 1e-5)[0]

    settings = {choice: {"code": choice, "chat": choice} for choice in config.speculation_choices() if choice != "off"}
    settings["off"] = {"code": "off", "chat": "off"}
    settings["per request"] = {"code": args.code_profile, "chat": args.chat_profile}
    print(f"{len(order)} requests ({args.code} code from {args.code_start}, {args.chat} chat from {args.chat_start})"
          f" x {args.tokens} tokens, batch 1, "
          f"{args.threads} thread(s), config {args.config}"
          + (f", chat sampled (temperature {args.chat_temperature}, top-p {args.chat_top_p})"
             if args.chat_temperature else ""))
    print(f"{'setting':14} {'tokens/forward':>30} {'tok/s':>24}  outputs")
    print(f"{'':14} {'code':>9} {'chat':>9} {'all':>9}  {'code':>7} {'chat':>7} {'all':>7}")
    figures = {}
    models.engine(config).generate([Request(prompt_ids=order[0][1], max_new_tokens=8)])  # warm up, untimed
    for name, choose in settings.items():
        engine = models.engine(config)
        totals = {kind: {"tokens": 0, "forwards": 0, "seconds": 0.0} for kind in ("code", "chat")}
        near, mismatch, by_distribution = 0, 0, 0
        for (kind, ids), ref, param in zip(order, refs, params):
            request = Request(prompt_ids=ids, max_new_tokens=args.tokens, params=param, speculation=choose[kind])
            start = time.perf_counter()
            result = engine.generate([request])[0]
            totals[kind]["seconds"] += time.perf_counter() - start
            totals[kind]["tokens"] += len(result.token_ids)
            totals[kind]["forwards"] += result.speculation["target_forwards"]
            agrees = agreement(result.token_ids, ref, ids, param, choose[kind])
            near += agrees is Agreement.NEAR_TIE
            mismatch += agrees is Agreement.MISMATCH
            by_distribution += agrees is None
        both = {key: totals["code"][key] + totals["chat"][key] for key in ("tokens", "forwards", "seconds")}
        row = {kind: {"tokens_per_forward": t["tokens"] / t["forwards"], "tokens_per_s": t["tokens"] / t["seconds"],
                      "tokens": t["tokens"], "target_forwards": t["forwards"]}
               for kind, t in (*totals.items(), ("all", both))}
        figures[name] = {**row, "near_ties": near, "mismatches": mismatch, "sampled_drafts": by_distribution,
                         "profiles": choose}
        print(f"{name:14} {row['code']['tokens_per_forward']:9.3f} {row['chat']['tokens_per_forward']:9.3f} "
              f"{row['all']['tokens_per_forward']:9.3f}  {row['code']['tokens_per_s']:7.1f} "
              f"{row['chat']['tokens_per_s']:7.1f} {row['all']['tokens_per_s']:7.1f}  "
              f"{'MISMATCH ' + str(mismatch) if mismatch else 'identical'}{f', near-tie {near}' if near else ''}"
              f"{f', {by_distribution} sampled drafts (exact in distribution)' if by_distribution else ''}")
    single = single_settings(figures)
    best = max(single, key=lambda k: single[k]["all"]["tokens_per_forward"])
    ratio = figures["per request"]["all"]["tokens_per_forward"] / single[best]["all"]["tokens_per_forward"]
    print(f"per request ({args.code_profile} for code, {args.chat_profile} for chat) vs the best single setting "
          f"({best}): {ratio:.3f}x tokens per target forward")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
