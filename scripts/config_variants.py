"""Variants of one cascade config side by side: each a static `csd` of the config with some drafter fields changed,
run by `bench`'s interleaved loop (prompt by prompt at batch 1) and checked against the target alone.

    OMP_NUM_THREADS=1 python scripts/config_variants.py --config examples/csd-mixed-long.yaml \
        --set layers4.min_confidence=0.5 --set layers4.min_confidence=0.2 [--prompts data/chat-prompts.jsonl --chat]
        [--limit 8] [--tokens 96]

The config as it is runs first (`as-is`); each `--set DRAFTER.FIELD=VALUE[,DRAFTER.FIELD=VALUE...]` is one more
variant (VALUE is YAML: `0.3`, `null`, `4`). Prints per variant: tok/s, its ratio to `as-is`, tokens per target
forward and the outputs against the target alone (identical, or differing first at a near-tie).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import workload  # scripts/workload.py (python puts the script's folder on the path)
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent


def variant(config, assignments: str):
    """`config` as a static cascade with `DRAFTER.FIELD=VALUE` assignments applied, validated like a file."""
    from tgi_csd.bench.methods import static_cascade
    from tgi_csd.config import parse_config

    data = config.model_dump()
    drafters = {spec["name"]: spec for spec in data["drafters"]}
    for assignment in assignments.split(","):
        target, _, value = assignment.partition("=")
        name, _, field = target.strip().partition(".")
        if name not in drafters or not field or not value:
            raise SystemExit(f"--set {assignment!r}: expected DRAFTER.FIELD=VALUE; drafters: {', '.join(drafters)}")
        drafters[name][field] = yaml.safe_load(value)
    return static_cascade(parse_config(data, source=f"--set {assignments}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workload.add_options(parser, REPO / "examples" / "csd-mixed-long.yaml", limit=8, tokens=96)
    parser.add_argument("--set", dest="variants", action="append", default=[], metavar="DRAFTER.FIELD=VALUE,...")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="near-tie logit gap, as `tgi-csd bench`")
    args = parser.parse_args()

    from tgi_csd.bench.methods import EngineMethod, static_cascade
    from tgi_csd.bench.runner import references, run_interleaved
    from tgi_csd.reference import Agreement

    config, models, prompts = workload.load(args)
    cascades = {"as-is": static_cascade(config)} | {v: variant(config, v) for v in args.variants}
    methods = [EngineMethod(name, models, cascade) for name, cascade in cascades.items()]
    console = Console()
    refs = references(models, prompts, args.tokens, console)
    measurements = run_interleaved(methods, prompts, refs, [1], 1, args.tokens, args.tolerance, console)

    table = Table(title=f"{args.config.name} variants: {len(prompts)} prompts x {args.tokens} tokens, batch 1")
    for column in ("variant", "tok/s", "vs as-is", "tokens per target forward", "outputs vs target alone"):
        table.add_column(column, justify="left" if column == "variant" else "right", overflow="fold")
    speed = {m.method: sum(map(len, m.run.outputs)) / m.run.seconds for m in measurements}
    for m in measurements:
        tokens = sum(map(len, m.run.outputs))
        counts = {a: sum(agreement is a for agreement, _ in m.checks) for a in Agreement}
        outputs = ", ".join(f"{a.value} {n}/{len(m.checks)}" for a, n in counts.items() if n)
        table.add_row(m.method, f"{speed[m.method]:.2f}", f"{speed[m.method] / speed['as-is']:.3f}x",
                      f"{tokens / m.run.target_forwards:.2f}", outputs)
    console.print(table)


if __name__ == "__main__":
    main()
