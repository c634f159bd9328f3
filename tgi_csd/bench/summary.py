"""Per-method statistics over repeats: tokens/s, speedup vs `ar` (and vs `nospec` when it ran), forwards,
time shares, SWI, output checks, adaptive cascades' speculation-off steps and final k."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tgi_csd.bench.cost import tokens_per_cost
from tgi_csd.bench.methods import Method, NotApplicable
from tgi_csd.bench.runner import Measurement
from tgi_csd.reference import Agreement

BATCH_1_ONLY = "batch size 1 only (transformers)"
_SEVERITY = {Agreement.IDENTICAL: 0, Agreement.NEAR_TIE: 1, Agreement.MISMATCH: 2}


@dataclass
class Spread:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Row:
    """One method at one batch size. Counts and outputs are the first repeat's (greedy: all repeats
    give the same); `speedup` pairs each repeat with `ar`'s in the same repeat and batch size,
    `vs_nospec` likewise with `nospec`'s (None when `nospec` did not run); `agreement` counts prompts
    by their worst check over the repeats; `adaptive` is an adaptive cascade's per-repeat engine
    figures (steps, speculation_off_steps, final current_k), else None."""

    method: str
    batch_size: int
    k: int | None
    tokens_per_s: Spread
    speedup: Spread
    tokens: int
    target_forwards: int
    tokens_per_target_forward: float
    drafter_forwards: dict[str, int]
    target_share: float
    drafter_share: float
    swi: float
    agreement: dict[str, int]
    differences: list[dict]
    drafts: dict
    outputs: list[list[int]]
    vs_nospec: Spread | None = None
    adaptive: list[dict] | None = None
    best: bool = False
    #: on CUDA, the most device memory any repeat allocated (MiB); else None
    peak_memory_mib: float | None = None

    @property
    def mismatches(self) -> int:
        return self.agreement[Agreement.MISMATCH.value]


@dataclass
class Skipped:
    method: str
    batch_size: int
    reason: str


def _tokens(m: Measurement) -> int:
    return sum(len(o) for o in m.run.outputs)


def rate(m: Measurement) -> float:
    """Generated tokens per second of walltime inside generate."""
    return _tokens(m) / m.run.seconds


def paired(runs: list[Measurement], baseline: list[Measurement]) -> Spread:
    """Each repeat's tokens/s over the baseline's in the same repeat."""
    rates = {m.repeat: rate(m) for m in baseline}
    return Spread.of([rate(m) / rates[m.repeat] for m in runs])


def _row(method: Method, batch_size: int, runs: list[Measurement], ar: list[Measurement],
         costs: dict[str, float], nospec: list[Measurement]) -> Row:
    first = runs[0].run
    tokens = _tokens(runs[0])
    ar_efficiency = tokens_per_cost(_tokens(ar[0]), ar[0].run.target_forwards, ar[0].run.drafter_forwards, costs)
    efficiency = tokens_per_cost(tokens, first.target_forwards, first.drafter_forwards, costs)
    worst: dict[int, tuple[Agreement, int | None]] = {}
    for m in runs:
        for prompt, check in enumerate(m.checks):
            if prompt not in worst or _SEVERITY[check[0]] > _SEVERITY[worst[prompt][0]]:
                worst[prompt] = check
    agreement = {a.value: 0 for a in Agreement}
    for check, _ in worst.values():
        agreement[check.value] += 1
    differences = [{"prompt": p, "agreement": a.value, "position": pos}
                   for p, (a, pos) in sorted(worst.items()) if a is not Agreement.IDENTICAL]
    return Row(
        method=method.name, batch_size=batch_size, k=method.k,
        tokens_per_s=Spread.of([rate(m) for m in runs]),
        speedup=paired(runs, ar),
        tokens=tokens, target_forwards=first.target_forwards,
        tokens_per_target_forward=tokens / first.target_forwards if first.target_forwards else 0.0,
        drafter_forwards=first.drafter_forwards,
        target_share=statistics.median(m.run.target_seconds / m.run.seconds for m in runs),
        drafter_share=statistics.median(m.run.drafter_seconds / m.run.seconds for m in runs),
        swi=efficiency / ar_efficiency if ar_efficiency else 0.0,
        agreement=agreement, differences=differences, drafts=first.drafts, outputs=first.outputs,
        vs_nospec=paired(runs, nospec) if nospec else None,
        adaptive=[m.run.adaptive for m in runs] if first.adaptive is not None else None,
        peak_memory_mib=max(m.run.peak_memory_bytes for m in runs) / 2**20
        if first.peak_memory_bytes is not None else None,
    )


def summarize(entries: list[Method | NotApplicable], measurements: list[Measurement], batch_sizes: list[int],
              costs: dict[str, float]) -> list[Row | Skipped]:
    """Rows by batch size, then in method order; the fastest method without a mismatch at each batch
    size is marked `best`. Needs `ar`'s measurements at every batch size (and uses `nospec`'s where run)."""
    groups: dict[tuple[str, int], list[Measurement]] = defaultdict(list)
    for m in measurements:
        groups[(m.method, m.batch_size)].append(m)
    out: list[Row | Skipped] = []
    for batch_size in batch_sizes:
        ar, nospec = groups[("ar", batch_size)], groups.get(("nospec", batch_size), [])
        rows = []
        for entry in entries:
            if isinstance(entry, NotApplicable):
                out.append(Skipped(entry.name, batch_size, entry.reason))
            elif (entry.name, batch_size) not in groups:
                out.append(Skipped(entry.name, batch_size, BATCH_1_ONLY))
            else:
                rows.append(_row(entry, batch_size, groups[(entry.name, batch_size)], ar, costs, nospec))
                out.append(rows[-1])
        exact = [r for r in rows if not r.mismatches]
        if exact:
            max(exact, key=lambda r: r.tokens_per_s.median).best = True
    return out


Headline = dict[str, float | str | dict[str, float]]


def headline(rows: list[Row | Skipped], static: Sequence[str] = ("csd",)) -> Headline:
    """The issues' goals (ratios of median speedups, each paired with `ar`, unless said otherwise).

    At batch size 1: `csd` against `ar`, the faster of `hf-assisted` and `hf-prompt-lookup`, and
    `sd`; `csd-adaptive` against the fastest exact of the `static` methods (`csd`, or a k-sweep's
    points). At every batch size: `csd-adaptive` against `nospec` (its median paired ratio).
    """
    out: Headline = {}
    measured = [r for r in rows if isinstance(r, Row)]
    at_1 = {r.method: r for r in measured if r.batch_size == 1}
    adaptive = {str(r.batch_size): r.vs_nospec.median for r in measured
                if r.method == "csd-adaptive" and r.vs_nospec is not None}
    if adaptive:
        out["csd_adaptive_vs_nospec"] = adaptive
        out["csd_adaptive_vs_nospec_min"] = min(adaptive.values())
    fixed = [at_1[name] for name in static if name in at_1 and not at_1[name].mismatches]
    if "csd-adaptive" in at_1 and fixed:
        best = max(fixed, key=lambda r: r.speedup.median)
        out["best_static"] = best.method
        out["csd_adaptive_vs_best_static"] = at_1["csd-adaptive"].speedup.median / best.speedup.median
    csd = at_1.get("csd")
    if csd is None:
        return out
    out["csd_vs_ar"] = csd.speedup.median
    hf = [at_1[name] for name in ("hf-assisted", "hf-prompt-lookup") if name in at_1]
    if hf:
        best = max(hf, key=lambda r: r.speedup.median)
        out["best_hf"] = best.method
        out["csd_vs_best_hf"] = csd.speedup.median / best.speedup.median
    if "sd" in at_1:
        out["csd_vs_sd"] = csd.speedup.median / at_1["sd"].speedup.median
    return out
