"""The interleaved loop: every repeat runs every method at every batch size on the same prompts, batch by
batch (batch 1 of A B C, batch 2 of B C A, …), so machine drift hits all methods alike even within a repeat;
each output is checked against the reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tgi_csd.bench.loading import BenchModels
from tgi_csd.bench.methods import Method, Run, batches
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
    """Warm every method up once (untimed), then `repeats` rounds: at each batch size, every method's pass over
    the prompts, fed one batch each in turn (the order rotating by one each batch, so no method always follows
    the same one). Methods that only take batch 1 run at batch 1 only."""
    for method in methods:
        method.run(prompts[:1], 1, min(WARMUP_TOKENS, max_new_tokens))
    cuda = torch.cuda.is_available()
    measurements = []
    with _progress(console) as progress:
        total = repeats * sum(b == 1 or m.batched for b in batch_sizes for m in methods) * len(prompts)
        task = progress.add_task("bench", total=total)
        for repeat in range(repeats):
            for batch_size in batch_sizes:
                active = [m for m in methods if batch_size == 1 or m.batched]
                sessions = [m.start(max_new_tokens) for m in active]
                peaks = [0] * len(active)
                for turn, chunk in enumerate(batches(prompts, batch_size)):
                    for i in _turns(len(active), turn + repeat):
                        progress.update(task, description=f"repeat {repeat + 1}/{repeats} · batch {batch_size} · "
                                                          f"{escape(active[i].name)}")
                        if cuda:
                            torch.cuda.reset_peak_memory_stats()
                        sessions[i].generate(chunk)
                        if cuda:
                            peaks[i] = max(peaks[i], torch.cuda.max_memory_allocated())
                        progress.advance(task, len(chunk))
                for method, session, peak in zip(active, sessions, peaks):
                    run = session.finish()
                    run.peak_memory_bytes = peak if cuda else None
                    checks = [compare(out, ref, tolerance) for out, ref in zip(run.outputs, refs)]
                    measurements.append(Measurement(method.name, batch_size, repeat, run, checks))
                    if any(agreement is Agreement.MISMATCH for agreement, _ in checks):
                        progress.console.print(f"[bold red]MISMATCH[/]: {escape(method.name)} at batch {batch_size} "
                                               "differs from the target alone")
    return measurements


def _turns(count: int, shift: int) -> list[int]:
    """0 .. count - 1, starting at `shift` (mod count) and wrapping around."""
    return [(shift + i) % count for i in range(count)]
