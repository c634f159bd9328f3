"""MaG with and without its store of recent requests, on streams of requests served in order.

    python scripts/store_bench.py [--prompts 20] [--tokens 48] [--batch-sizes 1,8] [--sizes 1,16,256]

Part 1, workloads: HumanEval's first `--prompts` prompts, then as many questions of data/chat-prompts.jsonl (the
target's chat template applied), each served in order in consecutive batches, so the store holds the requests
before. Methods over the same engine settings: `mag` (`--mag-config`, default examples/mag.yaml), `mag+store`, `csd`
(examples/csd-distilled.yaml) and `csd+store` (its MaG with a `--store-mb` store). Tokens per target forward
and tokens/s; every output is checked against the target alone under transformers (greedy, float32).

Part 2, store sizes: a store filled to its budget with HumanEval and chat texts (15% of their tokens replaced at
random, so each brings new n-grams); the memory it is charged, the memory Python holds for it (tracemalloc), and
the mean time of one lookup.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAT_PROMPTS = REPO / "data" / "chat-prompts.jsonl"


def with_store(config, store: dict):
    """`config` with a store of recent requests on its MaG drafter."""
    from tgi_csd.config import SuffixStoreSpec

    drafters = [d.model_copy(update={"store": SuffixStoreSpec(**store)}) if d.type == "mag" else d
                for d in config.drafters]
    return config.model_copy(update={"drafters": drafters})


def workloads(models, count: int) -> dict[str, list[list[int]]]:
    from tgi_csd.prompts import humaneval, load_prompts

    chat = [models.encode(q, chat=True) for q in load_prompts(str(CHAT_PROMPTS))[:count]]
    return {"humaneval": [models.encode(p) for p in humaneval(0, count)], "chat": chat}


def serve(models, config, prompts: list[list[int]], batch: int, tokens: int) -> tuple[list[list[int]], dict]:
    from tgi_csd.engine import Request

    engine = models.engine(config)
    outputs, seconds = [], 0.0
    for start in range(0, len(prompts), batch):
        requests = [Request(prompt_ids=p, max_new_tokens=tokens) for p in prompts[start:start + batch]]
        began = time.perf_counter()
        results = sorted(engine.generate(requests), key=lambda r: r.id)
        seconds += time.perf_counter() - began
        outputs.extend(r.token_ids for r in results)
    report = engine.report()
    generated = sum(map(len, outputs))
    sources = report["draft_sources"]
    store_rows = sum(n for key, n in sources.items() if key.endswith(":store"))
    drafted_rows = sum(n for key, n in sources.items() if not key.endswith(":none"))
    return outputs, {"tokens_per_forward": report["tokens_per_target_forward"], "tokens_per_s": generated / seconds,
                     "store_share_of_mag_rows": store_rows / drafted_rows if drafted_rows else 0.0}


def part_workloads(args) -> dict:
    import torch

    from tgi_csd.bench.loading import BenchModels
    from tgi_csd.config import load_config
    from tgi_csd.reference import Agreement, compare, reference_generate

    torch.set_num_threads(args.threads)
    csd = load_config(REPO / "examples" / "csd-distilled.yaml")
    mag = load_config(args.mag_config)
    models = BenchModels(csd)
    store = {"memory_mb": args.store_mb}
    configs = {"mag": mag, "mag+store": with_store(mag, store), "csd": csd, "csd+store": with_store(csd, store)}
    configs = {name: config for name, config in configs.items() if name in args.methods}
    figures = {}
    for name, prompts in workloads(models, args.prompts).items():
        if name not in args.workloads:
            continue
        refs = [reference_generate(models.target, p, args.tokens, models.eos_token_id) for p in prompts]
        for batch in args.batch_sizes:
            print(f"\n{name}: {len(prompts)} requests in order x {args.tokens} tokens, batch {batch}")
            print(f"  {'method':10} {'tokens/forward':>14} {'tok/s':>7} {'store rows':>10}  outputs")
            for method, config in configs.items():
                outputs, row = serve(models, config, prompts, batch, args.tokens)
                checks = [compare(o, r, 1e-3)[0] for o, r in zip(outputs, refs)]
                row["near_ties"] = sum(c is Agreement.NEAR_TIE for c in checks)
                row["mismatches"] = sum(c is Agreement.MISMATCH for c in checks)
                figures[f"{name}/batch{batch}/{method}"] = row
                verdict = f"MISMATCH {row['mismatches']}" if row["mismatches"] else "identical"
                print(f"  {method:10} {row['tokens_per_forward']:14.3f} {row['tokens_per_s']:7.1f} "
                      f"{row['store_share_of_mag_rows']:10.0%}  {verdict}"
                      f"{', near-tie ' + str(row['near_ties']) if row['near_ties'] else ''}")
            for base in [m for m in ("mag", "csd") if m in configs and f"{m}+store" in configs]:
                mine, theirs = figures[f"{name}/batch{batch}/{base}+store"], figures[f"{name}/batch{batch}/{base}"]
                print(f"  {base}+store vs {base}: {mine['tokens_per_forward'] / theirs['tokens_per_forward']:.3f}x "
                      f"tokens per forward, {mine['tokens_per_s'] / theirs['tokens_per_s']:.3f}x tok/s")
    return figures


def part_sizes(args) -> dict:
    from tgi_csd.drafters.suffix_store import SuffixStore
    from tgi_csd.models import DEFAULT_MODEL, fetch_model, load_tokenizer
    from tgi_csd.prompts import encode_prompt, humaneval, load_prompts

    tokenizer = load_tokenizer(fetch_model(DEFAULT_MODEL))
    corpus = [*(tokenizer(text).input_ids for text in humaneval()),
              *(encode_prompt(tokenizer, chat, chat=True) for chat in load_prompts(str(CHAT_PROMPTS)))]
    rng = random.Random(0)
    figures = {}
    print("\nstore size: charged MiB, Python-held MiB (tracemalloc), sequences, mean lookup µs (20,000 lookups), "
          "hit rate")
    for size in args.sizes:
        store = SuffixStore(memory_mb=size)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        while store.stats.evicted == 0:  # fill until the budget first forces an eviction
            # a corpus text with 15% of its tokens replaced: new n-grams, as new traffic brings
            store.add([rng.randrange(49152) if rng.random() < 0.15 else t for t in rng.choice(corpus)])
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        tails = []
        for _ in range(20000):
            tokens = rng.choice(corpus)
            end = rng.randrange(2, len(tokens))
            tails.append(tokens[max(0, end - 8):end])
        hits = store.stats.hits
        began = time.perf_counter()
        for tail in tails:
            store.lookup(tail, 5)
        per_lookup = (time.perf_counter() - began) / len(tails) * 1e6
        hit_rate = (store.stats.hits - hits) / len(tails)
        figures[f"{size}MB"] = {"charged_mib": store.charged_bytes / 2**20, "held_mib": held / 2**20,
                                "sequences": store.stats.sequences, "lookup_us": per_lookup, "hit_rate": hit_rate}
        print(f"  {size:4} MB: {store.charged_bytes / 2**20:8.2f} {held / 2**20:8.2f} {store.stats.sequences:8} "
              f"{per_lookup:8.2f} {hit_rate:6.0%}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--sizes", type=lambda s: [float(x) for x in s.split(",")], default=[1, 16, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store-mb", type=float, default=64, help="the store's memory_mb in part 1")
    parser.add_argument("--methods", type=lambda s: s.split(","), default=["mag", "mag+store", "csd", "csd+store"])
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["humaneval", "chat"])
    parser.add_argument("--mag-config", type=Path, default=REPO / "examples" / "mag.yaml",
                        help="the config `mag` runs (examples/mag-k8.yaml: MaG drafting up to 8 tokens)")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--skip-workloads", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    figures = {} if args.skip_sizes else {"sizes": part_sizes(args)}
    if not args.skip_workloads:
        figures["workloads"] = part_workloads(args)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
