"""PNG charts of the results (matplotlib, Agg backend): speedup per method, tokens per target forward
against k, speedup against batch size (vs `ar`, and vs `nospec` when it ran)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tgi_csd.bench.report import Results
from tgi_csd.bench.summary import Row

BEST, MISMATCH, PLAIN = "tab:green", "tab:red", "tab:blue"
#: issue 6: an adaptive cascade never below this fraction of no speculation's tokens/s
NOSPEC_GOAL = 0.98


def _color(row: Row) -> str:
    return MISMATCH if row.mismatches else BEST if row.best else PLAIN


def _speedup(plt, rows: list[Row], repeats: int, path: Path) -> None:
    """Horizontal bars: median walltime speedup with its min–max; a diamond at the SWI."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(rows)))
    y = list(range(len(rows)))[::-1]
    medians = [r.speedup.median for r in rows]
    errors = [[m - r.speedup.min for m, r in zip(medians, rows)], [r.speedup.max - m for m, r in zip(medians, rows)]]
    ax.barh(y, medians, xerr=errors, color=[_color(r) for r in rows], capsize=3, label="walltime speedup")
    ax.scatter([r.swi for r in rows], y, marker="D", color="black", zorder=3, label="SWI (cost model)")
    for yi, r in zip(y, rows):
        ax.annotate(f" {r.speedup.median:.2f}×" + ("  MISMATCH" if r.mismatches else ""), (r.speedup.max, yi),
                    va="center", fontsize=8, color=MISMATCH if r.mismatches else "black")
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(y, [r.method for r in rows])
    ax.set_xlabel("speedup vs ar (tokens/s ratio)")
    ax.set_title(f"Batch {rows[0].batch_size}: median and min–max over {repeats} repeats; green = fastest exact")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tokens_per_forward(plt, rows: list[Row], path: Path) -> None:
    """Tokens per target forward against draft tokens per target forward; the line is the ideal k + 1.
    Up to 10 methods get a legend entry each; more (a k-sweep) are plain points, the best one labelled."""
    rows = [r for r in rows if r.k is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    top = max(r.k for r in rows) + 1
    ax.plot([0, top - 1], [1, top], color="gray", linestyle="--", linewidth=1, label="every draft accepted (k + 1)")
    for r in rows:
        legend = len(rows) <= 10
        ax.scatter([r.k], [r.tokens_per_target_forward], zorder=3, label=r.method if legend else None,
                   color=None if legend else _color(r), marker="*" if r.best else "o", s=140 if r.best else 40)
        if r.best and not legend:
            ax.annotate(f" {r.method} (fastest)", (r.k, r.tokens_per_target_forward), fontsize=8)
    ax.set_xlabel("k: draft tokens per target forward")
    ax.set_ylabel("generated tokens per target forward")
    ax.set_title(f"Batch {rows[0].batch_size}: tokens per target forward vs k (star: fastest exact)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _batch_panel(ax, rows: list[Row], ratio: Callable[[Row], float], baseline: str) -> None:
    """One line per method: a median ratio against batch size (log 2 axis), 1.0 dashed."""
    sizes = sorted({r.batch_size for r in rows})
    for method in dict.fromkeys(r.method for r in rows):
        points = [(r.batch_size, ratio(r)) for r in rows if r.method == method]
        ax.plot(*zip(*points), marker="o", label=method)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"tokens/s vs {baseline} at the same batch size")
    ax.legend(fontsize=8)


def _batch(plt, rows: list[Row], path: Path) -> None:
    """Median speedup vs `ar` at the same batch size, one line per method that batches; when `nospec`
    ran, a second panel against it with the adaptive goal (0.98) dotted."""
    versus = [r for r in rows if r.vs_nospec is not None]
    fig, axes = plt.subplots(1, 2 if versus else 1, figsize=(13 if versus else 7, 5), squeeze=False)
    _batch_panel(axes[0][0], rows, lambda r: r.speedup.median, "ar")
    axes[0][0].set_title("Speedup vs batch size (median over repeats)")
    if versus:
        _batch_panel(axes[0][1], versus, lambda r: r.vs_nospec.median, "nospec")
        axes[0][1].axhline(NOSPEC_GOAL, color="tab:red", linestyle=":", linewidth=1,
                           label=f"adaptive goal ({NOSPEC_GOAL}× nospec)")
        axes[0][1].legend(fontsize=8)
        axes[0][1].set_title("Against our engine without drafters (median over repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(results: Results, out: Path) -> list[Path]:
    """`speedup.png` and `tokens_per_forward.png` (at the smallest batch size) and `batch.png` into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.measured
    smallest = min(r.batch_size for r in rows)
    first = [r for r in rows if r.batch_size == smallest]
    paths = [out / "speedup.png", out / "tokens_per_forward.png", out / "batch.png"]
    _speedup(plt, first, results.settings["repeats"], paths[0])
    _tokens_per_forward(plt, first, paths[1])
    _batch(plt, rows, paths[2])
    return paths
