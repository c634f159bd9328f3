"""The results as `results.json` (machine-readable), `results.md` (a table) and a console table."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from tgi_csd.bench.summary import Headline, Row, Skipped, Spread
from tgi_csd.reference import Agreement

COLUMNS = ["method", "batch", "k", "tok/s median (min–max)", "speedup vs ar (min–max)", "tok/fwd", "target fwd",
           "drafter time", "SWI", "outputs vs ar"]
NOSPEC_COLUMN = "vs nospec (min–max)"


@dataclass
class Results:
    settings: dict
    environment: dict
    #: compute parameters of the target and each neural drafter's cost relative to it (see `cost`)
    costs: dict
    rows: list[Row | Skipped]
    headline: Headline

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if isinstance(r, Row)]

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.measured)

    @property
    def columns(self) -> list[str]:
        """`COLUMNS`, with `NOSPEC_COLUMN` after the speedup when `nospec` ran."""
        if all(r.vs_nospec is None for r in self.measured):
            return COLUMNS
        return [*COLUMNS[:5], NOSPEC_COLUMN, *COLUMNS[5:]]

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


def _ratio(spread: Spread) -> str:
    return f"{spread.median:.2f}× ({spread.min:.2f}–{spread.max:.2f})"


def cells(row: Row | Skipped, nospec: bool = False) -> list[str]:
    """One table row (with the `NOSPEC_COLUMN` cell when `nospec`); `★` marks the fastest exact method
    at its batch size."""
    if isinstance(row, Skipped):
        return [row.method, str(row.batch_size), "", f"n/a: {row.reason}", *[""] * (6 + nospec)]
    rate = row.tokens_per_s
    versus = [_ratio(row.vs_nospec) if row.vs_nospec is not None else ""] if nospec else []
    return [
        row.method + (" ★" if row.best else ""), str(row.batch_size), _k(row),
        f"{rate.median:.1f} ({rate.min:.1f}–{rate.max:.1f})", _ratio(row.speedup), *versus,
        f"{row.tokens_per_target_forward:.2f}", str(row.target_forwards), f"{row.drafter_share:.0%}",
        f"{row.swi:.2f}", _outputs(row),
    ]


def summary_text(results: Results) -> str:
    """The fastest exact method per batch size and the goal ratios of the methods that ran (`headline`)."""
    fastest = "; ".join(f"batch {r.batch_size}: {r.method} ({r.speedup.median:.2f}× ar)" for r in results.fastest)
    text = f"Fastest exact: {fastest}." if fastest else "No method without a mismatch."
    headline = results.headline
    if "csd_vs_ar" in headline:
        parts = [f"csd {headline['csd_vs_ar']:.2f}× ar"]
        if "csd_vs_best_hf" in headline:
            parts.append(f"{headline['csd_vs_best_hf']:.2f}× {headline['best_hf']} (the faster transformers method)")
        if "csd_vs_sd" in headline:
            parts.append(f"{headline['csd_vs_sd']:.2f}× sd")
        text += " Batch 1: " + ", ".join(parts) + "."
    if "csd_adaptive_vs_nospec" in headline:
        ratios = ", ".join(f"batch {b} {v:.2f}×" for b, v in headline["csd_adaptive_vs_nospec"].items())
        text += f" csd-adaptive vs nospec: {ratios} (lowest {headline['csd_adaptive_vs_nospec_min']:.2f}×)."
    if "csd_adaptive_vs_best_static" in headline:
        text += (f" Batch 1: csd-adaptive {headline['csd_adaptive_vs_best_static']:.2f}× the best static "
                 f"k-matrix ({headline['best_static']}).")
    return text + f" Our engine's linear layers: {results.environment.get('engine_linear', 'torch')}."


def _k_text(current_k: dict[str, dict[str, int]]) -> str:
    """`target: mag=6; layers12: mag=3`."""
    return "; ".join(f"{reviewer}: " + ", ".join(f"{d}={k}" for d, k in ks.items())
                     for reviewer, ks in current_k.items())


def adaptive_lines(results: Results) -> list[str]:
    """A Markdown table of the adaptive rows: speculation-off steps and the final k, per repeat."""
    rows = [r for r in results.measured if r.adaptive]
    if not rows:
        return []
    lines = ["", "## Adaptive cascade", "",
             "| method | batch | speculation off (steps off / engine steps, per repeat) | final k (per repeat) |",
             "|---|---|---|---|"]
    for row in rows:
        off = ", ".join(f"{a['speculation_off_steps']}/{a['steps']}" for a in row.adaptive)
        final = " · ".join(_k_text(a["current_k"]) for a in row.adaptive)
        lines.append(f"| {row.method} | {row.batch_size} | {off} | {final} |")
    return lines


def template_note(settings: dict) -> str:
    """How the prompts met the chat template (older results carry no such fields: none)."""
    if not settings.get("chat_template"):
        return ""
    if settings.get("chat"):
        return " in the target's chat template"
    return f" ({settings['chat_prompts']} chats in the target's chat template, {settings['text_prompts']} texts raw)"


def markdown(results: Results) -> str:
    s = results.settings
    lines = [
        "# tgi-csd bench",
        "",
        f"{s['prompts']} prompts from {s['prompt_source']}{template_note(s)}, {s['max_new_tokens']} new tokens, "
        f"greedy, repeats: {s['repeats']} (interleaved), config `{s['config']}`.",
        "",
    ]
    if results.mismatches:
        lines += [f"**MISMATCH: {results.mismatches} outputs differ from the target alone (not at a near-tie).**", ""]
    lines += [summary_text(results), ""]
    columns = results.columns
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in results.rows:
        values = cells(row, NOSPEC_COLUMN in columns)
        if isinstance(row, Row) and row.mismatches:
            values[-1] = f"**{values[-1]}**"
        lines.append("| " + " | ".join(values) + " |")
    lines += [
        "",
        "tok/s: generated tokens per second of walltime inside generate (median and range over repeats). "
        "Speedup: tok/s over `ar`'s in the same repeat and batch size. tok/fwd: generated tokens per target "
        "forward (prefill included). Drafter time: share of walltime in drafter model forwards. SWI: the speedup "
        "the paper's cost model predicts (each model call costs its compute parameters relative to the "
        "target's; statistical drafters cost 0). k: draft tokens per target forward (adaptive: chosen per step "
        "within the k-matrix). vs nospec: tok/s over the engine without drafters' in the same repeat and batch "
        "size. ★: fastest exact method at its batch size.",
    ]
    lines += adaptive_lines(results)
    differences = [(r, d) for r in results.measured for d in r.differences]
    if differences:
        lines += ["", "## Outputs that differ from the target alone", ""]
        lines += [f"- {r.method} (batch {r.batch_size}): prompt {d['prompt']}, {d['agreement']} at token "
                  f"{d['position']}" for r, d in differences]
    lines += ["", "## Environment", "", *[f"- {key}: {value}" for key, value in results.environment.items()
                                          if value is not None]]
    lines += ["", "## Settings", "", "```json", json.dumps(results.settings, indent=2), "```", ""]
    return "\n".join(lines)


def console_table(results: Results) -> Table:
    table = Table(title=f"tgi-csd bench: {results.settings['prompts']} prompts, "
                        f"{results.settings['max_new_tokens']} new tokens, greedy")
    columns = results.columns
    for column in columns:
        table.add_column(column)
    for row in results.rows:
        style = "bold red" if isinstance(row, Row) and row.mismatches else ("dim" if isinstance(row, Skipped) else None)
        table.add_row(*map(escape, cells(row, NOSPEC_COLUMN in columns)), style=style)
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
