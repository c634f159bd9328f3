"""Benchmark strategies inside the real TGI v3.3.7 shard (patched), on CPU, over gRPC like the router.

For each configuration (no speculation, TGI's built-in n-gram, the `ngram` strategy, `csd`) the same
prompts run one at a time (batch size 1, greedy, `--max-new-tokens` each), then all together as one
batch. Reported per configuration:

* tokens per target forward: generated tokens / shard steps each request took part in (the prefill
  step included; every step is one target forward over the batch);
* walltime per generated token at batch size 1 (client-side, Prefill + Decode round trips);
* that greedy outputs equal those without speculation.

Usage (a venv prepared by integration_tests/shard/build.py, or TGI_SRC to prepare one):
    python scripts/tgi_shard_bench.py --venv ~/.cache/tgi-csd/integration/<key>/venv [--speculate 4] \
        [--prompts humaneval --limit 12] [--csd-config examples/tgi-csd-distilled.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from integration_tests.shard import build  # noqa: E402
from integration_tests.shard.client import ShardClient, Spec  # noqa: E402
from integration_tests.workload import PROMPTS  # noqa: E402
from tgi_csd.prompts import load_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=None, help="prepared shard venv (default: build from TGI_SRC)")
    parser.add_argument("--speculate", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--csd-config", default=None, help="cascade YAML for csd (default: MaG, k = S)")
    parser.add_argument("--adaptive-config", default=str(REPO / "examples" / "tgi-adaptive.yaml"),
                        help="cascade YAML with `adaptive` for csd-adaptive")
    parser.add_argument("--configs", default="spec0,stock,ngram,csd",
                        help="comma list of: spec0, stock, ngram, csd, csd-adaptive, or LABEL=CASCADE.yaml for the "
                        "csd strategy with that config (e.g. csd-distilled=examples/tgi-csd-distilled.yaml)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve the csd strategies' Prometheus metrics here and scrape them after each run")
    parser.add_argument("--prompts", default="workload",
                        help="'workload' (the integration suite's 12 mixed prompts), 'humaneval[:START:STOP]' or a "
                        "file, as for `tgi-csd bench`")
    parser.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    if args.venv:
        venv = args.venv
    else:
        if not os.environ.get("TGI_SRC"):
            parser.error("pass --venv or set TGI_SRC to a TGI v3.3.7 source tree")
        venv = build.prepare(Path(os.environ["TGI_SRC"]), Path.home() / ".cache" / "tgi-csd" / "integration")
    from transformers import AutoTokenizer

    from tgi_csd.models import fetch_model

    model = fetch_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(model)
    stubs = build.client_stubs(venv)
    S = args.speculate
    options = {
        "spec0": {},
        "stock": {"speculate": S},
        "ngram": {"speculate": S, "strategy": "ngram"},
        "csd": {"speculate": S, "strategy": "csd", "config": args.csd_config},
        "csd-adaptive": {"speculate": S, "strategy": "csd", "config": args.adaptive_config},
    }
    names = []
    for entry in args.configs.split(","):
        name, _, config = entry.partition("=")
        if config:
            options[name] = {"speculate": S, "strategy": "csd", "config": config}
        elif name not in options:
            parser.error(f"--configs: unknown {name!r}; use {', '.join(options)} or LABEL=CASCADE.yaml")
        names.append(name)
    workdir = Path(tempfile.mkdtemp(prefix="tgi-csd-bench-"))
    for option in options.values():  # the shard runs in `workdir`: adapter paths relative to this repo
        if option.get("config"):
            option["config"] = absolute_adapters(Path(option["config"]), workdir)
    prompts = PROMPTS if args.prompts == "workload" else load_prompts(args.prompts)
    specs = [Spec(p, max_new_tokens=args.max_new_tokens) for p in prompts[: args.limit]]
    results: dict[str, dict] = {}
    outputs: dict[str, list[list[int]]] = {}
    scraped: dict[str, dict[str, float]] = {}
    for name in names:
        serves_metrics = args.metrics_port is not None and options[name].get("strategy") == "csd"
        if serves_metrics:
            os.environ["TGI_CSD_METRICS_PORT"] = str(args.metrics_port)
        shard = build.Shard(venv, model, workdir, name, dtype=args.dtype, **options[name])
        os.environ.pop("TGI_CSD_METRICS_PORT", None)
        try:
            shard.wait_ready()
            client = ShardClient(shard.address, stubs, tokenizer)
            client.start()
            client.run([(0, specs[:1])])  # warm caches (not timed)
            solo, seconds = [], []
            for spec in specs:
                start = time.perf_counter()
                outcome, _ = client.run([(0, [spec])])
                seconds.append(time.perf_counter() - start)
                solo.append(outcome[0])
            batch, _ = client.run([(0, specs)])
            client.close()
            if serves_metrics:
                scraped[name] = scrape(args.metrics_port)
        except Exception:
            print(shard.tail(), file=sys.stderr)
            raise
        finally:
            shard.stop()
        tokens = sum(len(o.tokens) for o in solo)
        results[name] = {
            "tokens_per_target_forward_b1": round(tokens / sum(o.forwards for o in solo), 3),
            "tokens_per_target_forward_batch": round(sum(len(o.tokens) for o in batch)
                                                     / sum(o.forwards for o in batch), 3),
            "ms_per_token_b1": round(1000 * sum(seconds) / tokens, 2),
            "ms_per_token_b1_median_request": round(1000 * statistics.median(
                s / len(o.tokens) for s, o in zip(seconds, solo)), 2),
            "generated_tokens": tokens,
        }
        outputs[name] = [o.tokens for o in solo]
        batch_tokens = [o.tokens for o in batch]
        results[name]["batch_equals_b1"] = batch_tokens == outputs[name]
        print(name, results[name], flush=True)
    for name, samples in scraped.items():
        results[name]["metrics"] = samples
    reference = outputs.get("spec0")
    for name in results:
        results[name]["equals_spec0"] = None if reference is None else outputs[name] == reference
    summary = {"speculate": S, "dtype": args.dtype, "prompt_set": args.prompts, "prompts": len(specs),
               "max_new_tokens": args.max_new_tokens, "threads": os.environ.get("OMP_NUM_THREADS", "1"),
               "configs": {name: options[name].get("config") for name in names}, "results": results}
    for baseline in ("stock", "ngram"):
        if baseline in results:
            for name in results:
                if options[name].get("strategy") == "csd":
                    summary[f"{name}_over_{baseline}_tokens_per_forward"] = round(
                        results[name]["tokens_per_target_forward_b1"]
                        / results[baseline]["tokens_per_target_forward_b1"], 3)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


def absolute_adapters(config: Path, workdir: Path) -> str:
    """A copy of `config` in `workdir` whose relative `adapter` paths are resolved against this repo."""
    import yaml

    data = yaml.safe_load(config.read_text())
    for drafter in data.get("drafters", []):
        if drafter.get("adapter") and not Path(drafter["adapter"]).is_absolute():
            drafter["adapter"] = str(REPO / drafter["adapter"])
    out = workdir / f"{config.stem}.yaml"
    out.write_text(yaml.safe_dump(data))
    return str(out)


def scrape(port: int) -> dict[str, float]:
    """The `tgi_csd_*` samples the shard serves (label sets folded into the name)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        sample.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
                       if sample.labels else ""): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name.startswith("tgi_csd_")
    }


if __name__ == "__main__":
    main()
