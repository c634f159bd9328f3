"""The interleaved loop: every repeat runs every method (A B C … A B C …) at every batch size on the
same prompts, so machine drift hits all methods alike; each output is checked against the reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tgi_csd.bench.loading import BenchModels
from tgi_csd.bench.methods import Method, Run
from tgi_csd.reference import Agreement, ReferenceOutput, compare, reference_generate

WARMUP_TOKENS = 8


@dataclass
class Measurement:
    """One method, one batch size, one repeat; `checks[i]`: prompt i's output against the reference."""

    method: str
    batch_size: int
    repeat: int
    run: Run
    checks: list[tuple[Agreement, int | None]]


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def references(models: BenchModels, prompts: list[list[int]], max_new_tokens: int,
               console: Console) -> list[ReferenceOutput]:
    """The target alone under transformers `generate` (batch 1), with top-2 logit gaps: the oracle."""
    with _progress(console) as progress:
        task = progress.add_task("reference (target alone)", total=len(prompts))
        out = []
        for ids in prompts:
            out.append(reference_generate(models.target, ids, max_new_tokens, models.eos_token_id))
            progress.advance(task)
    return out


def run_interleaved(methods: list[Method], prompts: list[list[int]], refs: list[ReferenceOutput],
                    batch_sizes: list[int], repeats: int, max_new_tokens: int, tolerance: float,
                    console: Console) -> list[Measurement]:
    """Warm every method up once (untimed), then `repeats` rounds of every (batch size, method) pair.
    Methods that only take batch 1 run at batch 1 only."""
    for method in methods:
        method.run(prompts[:1], 1, min(WARMUP_TOKENS, max_new_tokens), lambda _: None)
    plan = [(b, m) for b in batch_sizes for m in methods if b == 1 or m.batched]
    measurements = []
    with _progress(console) as progress:
        task = progress.add_task("bench", total=repeats * len(plan) * len(prompts))
        for repeat in range(repeats):
            for batch_size, method in plan:
                progress.update(task, description=f"repeat {repeat + 1}/{repeats} · batch {batch_size} · "
                                                  f"{escape(method.name)}")
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                run = method.run(prompts, batch_size, max_new_tokens, lambda n: progress.advance(task, n))
                if torch.cuda.is_available():
                    run.peak_memory_bytes = torch.cuda.max_memory_allocated()
                checks = [compare(out, ref, tolerance) for out, ref in zip(run.outputs, refs)]
                measurements.append(Measurement(method.name, batch_size, repeat, run, checks))
                if any(agreement is Agreement.MISMATCH for agreement, _ in checks):
                    progress.console.print(f"[bold red]MISMATCH[/]: {escape(method.name)} at batch {batch_size} "
                                           "differs from the target alone")
    return measurements
