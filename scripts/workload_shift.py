"""Workload shift: one adaptive engine over code prompts, then chat-like prompts, recording per step
the k it chooses for the target, its windowed acceptance and tokens/s; the static cascade (the
k-matrix's bounds as fixed k) and no speculation run the same two phases for comparison.

    python scripts/workload_shift.py --config examples/mag-adaptive.yaml --code-prompts humaneval \
        --chat-prompts data/chat-prompts.jsonl --limit 16 --max-new-tokens 128 --batch-size 4 --out shift-out

Each phase keeps up to --batch-size requests in flight (continuous batching: a finished request's
slot goes to the phase's next prompt at the next step); the chat phase starts once the code phase
has drained. Chat prompts go through the tokenizer's chat template when it has one. Writes
shift.json (settings, per-step records, per-phase summaries) and shift.png (k, acceptance and
rolling tokens/s against generated tokens, the phase boundary marked) into --out and prints the
per-phase table. Every engine's outputs are compared with no speculation's (greedy: equal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tgi_csd.bench.loading import BenchModels
from tgi_csd.bench.methods import adaptive_cascade, no_speculation, static_cascade
from tgi_csd.bench.options import check_at_least
from tgi_csd.config import load_config
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError
from tgi_csd.prompts import load_prompts

ENGINES = ("nospec", "static", "adaptive")
WARMUP_TOKENS = 8


def _counts(engine: Engine) -> dict:
    """The target's cumulative counters the per-step records are deltas of."""
    stats = engine.stats
    pairs = {drafter: s for (reviewer, drafter), s in stats.pairs.items() if reviewer == "target"}
    return {"generated": stats.generated_tokens, "off": stats.speculation_off_steps,
            "proposed": {d: s.proposed for d, s in pairs.items()},
            "accepted": {d: s.accepted for d, s in pairs.items()}}


def window_acceptance(engine: Engine) -> dict[str, float] | None:
    """The target's controller's windowed acceptance per drafter (accepted / reached, pooled over
    positions, with its decay), None without a controller or before any observation."""
    controller = engine.top.controller
    if controller is None:
        return None
    acceptance = controller.acceptance
    out = {}
    for name in controller.names:
        reached = sum(v for (d, _), v in acceptance.reached.items() if d == name)
        accepted = sum(v for (d, _), v in acceptance.accepted.items() if d == name)
        if reached:
            out[name] = accepted / reached
    return out or None


def run_phase(engine: Engine, phase: str, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
              records: list[dict]) -> list[list[int]]:
    """`prompts` through `engine` with at most `batch_size` in flight, until all are done; appends one
    record per step to `records` and returns the outputs in prompt order."""
    queue = list(enumerate(prompts))[::-1]
    number: dict[int, int] = {}
    done: dict[int, list[int]] = {}
    while True:
        while queue and len(engine.running) + len(engine.waiting) < batch_size:
            i, ids = queue.pop()
            request = Request(prompt_ids=ids, max_new_tokens=max_new_tokens)
            number[request.id] = i
            engine.add_request(request)
        if not engine.has_work():
            return [done[i] for i in range(len(prompts))]
        rows, admit = len(engine.running) + len(engine.waiting), bool(engine.waiting)
        before = _counts(engine)
        start = time.perf_counter()
        results = engine.step()
        seconds = time.perf_counter() - start
        after = _counts(engine)
        records.append({
            "step": len(records), "phase": phase, "rows": rows, "admit": admit,
            "tokens": after["generated"] - before["generated"], "seconds": seconds,
            "k": None if admit else dict(engine.stats.current_k.get("target", {})),
            "off": after["off"] > before["off"],
            "proposed": {d: n - before["proposed"].get(d, 0) for d, n in after["proposed"].items()},
            "accepted": {d: n - before["accepted"].get(d, 0) for d, n in after["accepted"].items()},
            "window_acceptance": window_acceptance(engine),
        })
        for result in results:
            done[number[result.id]] = result.token_ids


def run_phases(engine: Engine, phases: list[tuple[str, list[list[int]]]], batch_size: int,
               max_new_tokens: int) -> tuple[list[dict], dict[str, list[list[int]]]]:
    """Every phase's prompts through one `engine`, one phase after the other (the controller keeps
    what it learnt); the per-step records and the outputs per phase in prompt order."""
    records: list[dict] = []
    outputs = {phase: run_phase(engine, phase, prompts, batch_size, max_new_tokens, records)
               for phase, prompts in phases}
    return records, outputs


def _k_text(k: dict[str, int] | None) -> str:
    return ",".join(f"{d}={n}" for d, n in k.items()) if k else "off"


def phase_summary(records: list[dict], phase: str) -> dict:
    """One phase of one engine: tokens, seconds, tokens/s, speculation-off steps, the chosen k (mean,
    most common, last) and acceptance per drafter."""
    steps = [r for r in records if r["phase"] == phase]
    spec = [r for r in steps if not r["admit"]]
    tokens, seconds = sum(r["tokens"] for r in steps), sum(r["seconds"] for r in steps)
    drafters = sorted({d for r in spec for d in r["k"]})
    proposed = {d: sum(r["proposed"].get(d, 0) for r in steps) for d in drafters}
    accepted = {d: sum(r["accepted"].get(d, 0) for r in steps) for d in drafters}
    modal = Counter(_k_text(r["k"] if any(r["k"].values()) else None) for r in spec).most_common(1)
    return {
        "phase": phase, "tokens": tokens, "seconds": round(seconds, 4),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "steps": len(steps), "speculate_steps": len(spec), "speculation_off_steps": sum(r["off"] for r in spec),
        "mean_k": {d: statistics.fmean(r["k"].get(d, 0) for r in spec) for d in drafters} if spec else {},
        "modal_k": modal[0][0] if modal else None,
        "final_k": spec[-1]["k"] if spec else None,
        "acceptance": {d: accepted[d] / proposed[d] for d in drafters if proposed[d]},
    }


def _rolling(records: list[dict], window: int) -> tuple[list[int], list[float]]:
    """Cumulative generated tokens at each step, and tokens/s over the last `window` steps."""
    x, rates, total = [], [], 0
    for i, r in enumerate(records):
        total += r["tokens"]
        recent = records[max(0, i - window + 1):i + 1]
        seconds = sum(s["seconds"] for s in recent)
        x.append(total)
        rates.append(sum(s["tokens"] for s in recent) / seconds if seconds else 0.0)
    return x, rates


def _rolling_acceptance(records: list[dict], drafter: str, window: int) -> tuple[list[int], list[float]]:
    """Accepted / proposed draft tokens of `drafter` over the last `window` steps (steps with a draft)."""
    x, rates, total = [], [], 0
    for i, r in enumerate(records):
        total += r["tokens"]
        recent = records[max(0, i - window + 1):i + 1]
        proposed = sum(s["proposed"].get(drafter, 0) for s in recent)
        if proposed:
            x.append(total)
            rates.append(sum(s["accepted"].get(drafter, 0) for s in recent) / proposed)
    return x, rates


def plot(runs: dict[str, list[dict]], bounds: dict[str, int], boundary: int, window: int, path: Path) -> None:
    """shift.png: the adaptive engine's k per drafter, acceptance (its controller's window and the
    static engine's rolling rate) and every engine's rolling tokens/s, against generated tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (k_ax, acc_ax, rate_ax) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    adaptive = runs["adaptive"]
    x, _ = _rolling(adaptive, window)
    spec = [(xi, r) for xi, r in zip(x, adaptive) if not r["admit"]]
    for i, (drafter, bound) in enumerate(bounds.items()):
        color = f"C{i}"
        k_ax.step([xi for xi, _ in spec], [r["k"].get(drafter, 0) for _, r in spec], where="post", color=color,
                  label=f"{drafter}: chosen k")
        k_ax.axhline(bound, color=color, linestyle=":", linewidth=1, label=f"{drafter}: bound (static k)")
        window_points = [(xi, r["window_acceptance"][drafter]) for xi, r in zip(x, adaptive)
                         if r["window_acceptance"] and drafter in r["window_acceptance"]]
        if window_points:
            acc_ax.plot(*zip(*window_points), color=color, label=f"{drafter}: adaptive, controller's window")
        static_points = _rolling_acceptance(runs["static"], drafter, window)
        if static_points[0]:
            acc_ax.plot(*static_points, color=color, linestyle="--", alpha=0.7,
                        label=f"{drafter}: static, last {window} steps")
    for name, style in zip(ENGINES, ["gray", "tab:orange", "tab:green"]):
        rate_ax.plot(*_rolling(runs[name], window), color=style, label=name)
    k_ax.set_ylabel("draft tokens for the target")
    k_ax.set_title("Adaptive cascade under a workload shift (code prompts, then chat prompts)")
    acc_ax.set_ylabel("acceptance")
    acc_ax.set_ylim(0, 1.05)
    rate_ax.set_ylabel(f"tokens/s (last {window} steps)")
    rate_ax.set_xlabel("generated tokens")
    for ax in (k_ax, acc_ax, rate_ax):
        ax.axvline(boundary, color="black", linestyle="--", linewidth=1)
        ax.legend(fontsize=7, loc="upper right")
    k_ax.annotate(" code", (0, 1), xycoords=("data", "axes fraction"), va="top", fontsize=9)
    k_ax.annotate(" chat", (boundary, 1), xycoords=("data", "axes fraction"), va="top", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(summaries: dict[str, list[dict]]) -> Table:
    """Per phase and engine: tokens/s and its ratio to no speculation's, speculation-off steps, k, acceptance."""
    out = Table(title="Workload shift: per phase")
    for column in ["phase", "engine", "tokens", "tok/s", "vs nospec", "spec off", "mean k", "most common k",
                   "final k", "acceptance"]:
        out.add_column(column)
    phases = [s["phase"] for s in summaries["nospec"]]
    for p, phase in enumerate(phases):
        base = summaries["nospec"][p]["tokens_per_s"]
        for name in ENGINES:
            s = summaries[name][p]
            out.add_row(phase, name, str(s["tokens"]), f"{s['tokens_per_s']:.1f}",
                        f"{s['tokens_per_s'] / base:.2f}×" if base else "",
                        f"{s['speculation_off_steps']}/{s['speculate_steps']}",
                        ", ".join(f"{d}={k:.1f}" for d, k in s["mean_k"].items()),
                        s["modal_k"] or "", _k_text(s["final_k"]) if s["final_k"] is not None else "",
                        ", ".join(f"{d} {a:.0%}" for d, a in s["acceptance"].items()))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path,
                        help="cascade YAML; its k-matrix bounds the adaptive engine and is the static engine's k")
    parser.add_argument("--code-prompts", default="humaneval", help="first phase (default: HumanEval)")
    parser.add_argument("--chat-prompts", default="data/chat-prompts.jsonl", help="second phase (chat template)")
    parser.add_argument("--limit", type=int, default=16, help="prompts per phase (> 0)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per prompt (> 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="requests in flight (> 0)")
    parser.add_argument("--window", type=int, default=16, help="steps per rolling tokens/s and acceptance (> 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed")
    parser.add_argument("--out", type=Path, default=Path("shift-out"), help="folder for shift.json and shift.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the three engines over both phases and write the results; 2 on bad input (one error line)."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        for option, value in [("--limit", args.limit), ("--max-new-tokens", args.max_new_tokens),
                              ("--batch-size", args.batch_size), ("--window", args.window)]:
            check_at_least(option, value, 1)
        if args.threads is not None:
            check_at_least("--threads", args.threads, 1)
        config = load_config(args.config)
        if not config.drafters:
            raise ConfigError(f"--config: {args.config} has no drafters; nothing to adapt")
        texts = {"code": load_prompts(args.code_prompts, "--code-prompts")[:args.limit],
                 "chat": load_prompts(args.chat_prompts, "--chat-prompts")[:args.limit]}
        torch.manual_seed(args.seed)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        console.print(f"Loading {config.target.model} and its drafters")
        models = BenchModels(config)
    except ConfigError as error:
        console.print(f"error: {error}", markup=False, highlight=False)
        return 2
    phases = [("code", [models.encode(t) for t in texts["code"]]),
              ("chat", [models.encode(t, chat=bool(models.tokenizer.chat_template)) for t in texts["chat"]])]
    cascades = {"nospec": no_speculation(config), "static": static_cascade(config),
                "adaptive": adaptive_cascade(config)}
    runs, outputs = {}, {}
    for name, cascade in cascades.items():
        models.engine(cascade).generate([Request(prompt_ids=phases[0][1][0], max_new_tokens=WARMUP_TOKENS)])
        with console.status(f"{name}: {len(phases[0][1])} code prompts, then {len(phases[1][1])} chat prompts"):
            runs[name], outputs[name] = run_phases(models.engine(cascade), phases, args.batch_size,
                                                   args.max_new_tokens)
    differences = {name: {phase: sum(a != b for a, b in zip(outputs[name][phase], outputs["nospec"][phase]))
                          for phase, _ in phases} for name in ENGINES}
    summaries = {name: [phase_summary(runs[name], phase) for phase, _ in phases] for name in ENGINES}
    boundary = sum(r["tokens"] for r in runs["adaptive"] if r["phase"] == "code")
    bounds = dict(zip([d.name for d in config.drafters], config.k_matrix[0]))
    bounds = {d: k for d, k in bounds.items() if k}
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    data = {"settings": {**settings, "cascade": config.model_dump(mode="json"),
                         "adaptive": cascades["adaptive"].adaptive.model_dump(),
                         "prompts": {phase: len(ids) for phase, ids in phases}},
            "differences_vs_nospec": differences, "summary": summaries, "steps": runs}
    (args.out / "shift.json").write_text(json.dumps(data, indent=1) + "\n")
    plot(runs, bounds, boundary, args.window, args.out / "shift.png")
    stdout = Console()
    if not stdout.is_terminal:
        stdout.width = 180
    stdout.print(table(summaries))
    if any(n for per_phase in differences.values() for n in per_phase.values()):
        console.print(f"[bold red]Outputs differ from no speculation[/]: {differences}")
    console.print(f"Wrote {args.out / 'shift.json'} and {args.out / 'shift.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
