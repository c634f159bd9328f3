"""The results as `results.json` (machine-readable), `results.md` (a table) and a console table."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from tgi_csd.bench.summary import Row, Skipped
from tgi_csd.reference import Agreement

COLUMNS = ["method", "batch", "k", "tok/s median (min–max)", "speedup vs ar (min–max)", "tok/fwd", "target fwd",
           "drafter time", "SWI", "outputs vs ar"]


@dataclass
class Results:
    settings: dict
    environment: dict
    #: compute parameters of the target and each neural drafter's cost relative to it (see `cost`)
    costs: dict
    rows: list[Row | Skipped]
    headline: dict[str, float | str]

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if isinstance(r, Row)]

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.measured)

    @property
    def fastest(self) -> list[Row]:
        """The fastest exact method at each batch size (in a k-sweep: the best k-matrix)."""
        return [r for r in self.measured if r.best]

    def as_dict(self) -> dict:
        rows = [{"applicable": isinstance(r, Row), **asdict(r)} for r in self.rows]
        return {"settings": self.settings, "environment": self.environment, "costs": self.costs,
                "headline": self.headline, "fastest": {str(r.batch_size): r.method for r in self.fastest},
                "mismatches": self.mismatches, "rows": rows}


def _k(row: Row) -> str:
    return "adaptive" if row.k is None else str(row.k)


def _outputs(row: Row) -> str:
    total = sum(row.agreement.values())
    if row.mismatches:
        return f"MISMATCH {row.mismatches}/{total}"
    near = row.agreement[Agreement.NEAR_TIE.value]
    return f"identical {total - near}/{total}" + (f", near-tie {near}" if near else "")


def cells(row: Row | Skipped) -> list[str]:
    """One table row; `★` marks the fastest exact method at its batch size."""
    if isinstance(row, Skipped):
        return [row.method, str(row.batch_size), "", f"n/a: {row.reason}", "", "", "", "", "", ""]
    rate, speedup = row.tokens_per_s, row.speedup
    return [
        row.method + (" ★" if row.best else ""), str(row.batch_size), _k(row),
        f"{rate.median:.1f} ({rate.min:.1f}–{rate.max:.1f})",
        f"{speedup.median:.2f}× ({speedup.min:.2f}–{speedup.max:.2f})",
        f"{row.tokens_per_target_forward:.2f}", str(row.target_forwards), f"{row.drafter_share:.0%}",
        f"{row.swi:.2f}", _outputs(row),
    ]


def summary_text(results: Results) -> str:
    """The fastest exact method per batch size and, when `csd` ran, the issue's goal ratios at batch 1."""
    fastest = "; ".join(f"batch {r.batch_size}: {r.method} ({r.speedup.median:.2f}× ar)" for r in results.fastest)
    text = f"Fastest exact: {fastest}." if fastest else "No method without a mismatch."
    headline = results.headline
    if not headline:
        return text
    parts = [f"csd {headline['csd_vs_ar']:.2f}× ar"]
    if "csd_vs_best_hf" in headline:
        parts.append(f"{headline['csd_vs_best_hf']:.2f}× {headline['best_hf']} (the faster transformers method)")
    if "csd_vs_sd" in headline:
        parts.append(f"{headline['csd_vs_sd']:.2f}× sd")
    return f"{text} Batch 1: " + ", ".join(parts) + "."


def markdown(results: Results) -> str:
    s = results.settings
    lines = [
        "# tgi-csd bench",
        "",
        f"{s['prompts']} prompts from {s['prompt_source']}, {s['max_new_tokens']} new tokens, greedy, "
        f"repeats: {s['repeats']} (interleaved), config `{s['config']}`.",
        "",
    ]
    if results.mismatches:
        lines += [f"**MISMATCH: {results.mismatches} outputs differ from the target alone (not at a near-tie).**", ""]
    lines += [summary_text(results), ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in results.rows:
        values = cells(row)
        if isinstance(row, Row) and row.mismatches:
            values[-1] = f"**{values[-1]}**"
        lines.append("| " + " | ".join(values) + " |")
    lines += [
        "",
        "tok/s: generated tokens per second of walltime inside generate (median and range over repeats). "
        "Speedup: tok/s over `ar`'s in the same repeat and batch size. tok/fwd: generated tokens per target "
        "forward (prefill included). Drafter time: share of walltime in drafter model forwards. SWI: the speedup "
        "the paper's cost model predicts (each model call costs its compute parameters relative to the "
        "target's; statistical drafters cost 0). k: draft tokens per target forward. ★: fastest exact method "
        "at its batch size.",
    ]
    differences = [(r, d) for r in results.measured for d in r.differences]
    if differences:
        lines += ["", "## Outputs that differ from the target alone", ""]
        lines += [f"- {r.method} (batch {r.batch_size}): prompt {d['prompt']}, {d['agreement']} at token "
                  f"{d['position']}" for r, d in differences]
    lines += ["", "## Environment", "", *[f"- {key}: {value}" for key, value in results.environment.items()]]
    lines += ["", "## Settings", "", "```json", json.dumps(results.settings, indent=2), "```", ""]
    return "\n".join(lines)


def console_table(results: Results) -> Table:
    table = Table(title=f"tgi-csd bench: {results.settings['prompts']} prompts, "
                        f"{results.settings['max_new_tokens']} new tokens, greedy")
    for column in COLUMNS:
        table.add_column(column)
    for row in results.rows:
        style = "bold red" if isinstance(row, Row) and row.mismatches else ("dim" if isinstance(row, Skipped) else None)
        table.add_row(*map(escape, cells(row)), style=style)
    return table


def _json(data: dict) -> str:
    """Indented JSON with lists of integers (token ids) kept on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + re.sub(r",\s*", ",", m.group(1)) + "]", text)


def write(results: Results, out: Path) -> None:
    """`results.json` and `results.md` into `out` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(_json(results.as_dict()) + "\n")
    (out / "results.md").write_text(markdown(results))
