"""`tgi-csd tune`: offline search for the fastest static k-matrix of a cascade on a prompt set.

Every grid point (a static k-matrix over the config's drafters) runs through the engine next to
`nospec` (the same engine without drafters) on the same prompts at one batch size, interleaved over
repeats with the bench's machinery; every output is checked against the target alone (greedy, a
flip only at a near-tie allowed), so a point whose outputs differ from no speculation cannot win.
The fastest exact point by median tokens/s is written into a copy of the config (static: any
`adaptive` section is dropped), under a header with the measured figures and the command.

Default grid: each positive k-matrix entry v is tried at 1..v (zeros stay 0); when that makes more
than `MAX_DEFAULT_POINTS` points, at the powers of two below v and v itself.
"""

from __future__ import annotations

import math
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from tgi_csd.bench.ksweep import grid_points, label, load_grid
from tgi_csd.bench.options import check_at_least
from tgi_csd.config import CascadeConfig, parse_config, read_yaml
from tgi_csd.errors import ConfigError
from tgi_csd.prompts import Prompt, load_prompts

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from tgi_csd.bench.summary import Spread

MAX_DEFAULT_POINTS = 64
NOSPEC = "nospec"


def entry_values(bound: int, full: bool) -> list[int]:
    """Values tried for one k-matrix entry: 0 stays 0; else 1..bound (`full`), or powers of two below it and it."""
    if bound == 0:
        return [0]
    if full:
        return list(range(1, bound + 1))
    return sorted({*(2**i for i in range(bound.bit_length()) if 2**i < bound), bound})


def default_cells(k_matrix: list[list[int]]) -> list[list[list[int]]]:
    """The default grid's values per entry (see the module docstring)."""
    full = math.prod(max(k, 1) for row in k_matrix for k in row) <= MAX_DEFAULT_POINTS
    return [[entry_values(k, full) for k in row] for row in k_matrix]


@dataclass
class TunePlan:
    """Checked options: the source config (parsed and as written), prompts, the static points to try."""

    config_path: Path
    raw: dict
    cascade: CascadeConfig
    prompts: list[Prompt]
    chat: bool
    points: list[CascadeConfig]
    skipped: int
    max_new_tokens: int
    batch_size: int
    repeats: int
    tolerance: float
    out: Path
    command: str


def plan(*, config: Path, prompts: str, chat: bool, grid: Path | None, limit: int, max_new_tokens: int, batch_size: int,
         repeats: int, tolerance: float, threads: int | None, out: Path) -> TunePlan:
    """Check every option (reading the config, prompts and grid, loading no model); errors name the option."""
    check_at_least("--limit", limit, 1)
    check_at_least("--max-new-tokens", max_new_tokens, 1)
    check_at_least("--batch-size", batch_size, 1)
    check_at_least("--repeats", repeats, 1)
    check_at_least("--tolerance", tolerance, 0)
    if threads is not None:
        check_at_least("--threads", threads, 1)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out: {out} must end in .yaml or .yml (the tuned config)")
    raw = read_yaml(config, "--config")
    cascade = parse_config(raw, str(config))
    if not cascade.drafters:
        raise ConfigError(f"--config: {config} has no drafters, so no k-matrix to tune")
    texts = load_prompts(prompts, "--prompts")[:limit]
    if grid is not None:
        points, skipped = load_grid(grid, cascade, "--grid")
    else:
        points, skipped = grid_points(default_cells(cascade.k_matrix), cascade)
    words = ["tgi-csd", "tune", "--config", str(config), "--prompts", prompts, *(["--chat"] if chat else []),
             *(["--grid", str(grid)] if grid is not None else []), "--limit", str(limit),
             "--max-new-tokens", str(max_new_tokens), "--batch-size", str(batch_size), "--repeats", str(repeats),
             *(["--threads", str(threads)] if threads is not None else []), "--out", str(out)]
    return TunePlan(config, raw, cascade, texts, chat, points, skipped, max_new_tokens, batch_size, repeats, tolerance,
                    out, shlex.join(words))


@dataclass
class Point:
    """One measured method: a grid point (`k_matrix`) or `nospec` (None). `vs_nospec` pairs each
    repeat's tokens/s with nospec's in the same repeat; `mismatches` counts prompts whose output
    differed from the target alone (not at a near-tie) in any repeat."""

    name: str
    k_matrix: list[list[int]] | None
    tokens_per_s: Spread
    vs_nospec: Spread
    tokens_per_target_forward: float
    mismatches: int


def measure(checked: TunePlan, console: Console) -> list[Point]:
    """Run nospec and every point interleaved; the points ranked fastest exact first, then nospec,
    then the points with a mismatch."""
    from tgi_csd.bench import runner
    from tgi_csd.bench.loading import BenchModels
    from tgi_csd.bench.methods import EngineMethod, no_speculation
    from tgi_csd.bench.summary import Spread, paired, rate
    from tgi_csd.reference import Agreement

    models = BenchModels(checked.cascade)
    methods = [EngineMethod(NOSPEC, models, no_speculation(checked.cascade)),
               *(EngineMethod(label(p.k_matrix), models, p) for p in checked.points)]
    prompt_ids = [models.encode(p, checked.chat) for p in checked.prompts]
    refs = runner.references(models, prompt_ids, checked.max_new_tokens, console)
    measurements = runner.run_interleaved(methods, prompt_ids, refs, [checked.batch_size], checked.repeats,
                                          checked.max_new_tokens, checked.tolerance, console)
    groups = defaultdict(list)
    for m in measurements:
        groups[m.method].append(m)
    points = []
    for method in methods:
        runs = groups[method.name]
        first = runs[0].run
        wrong = {i for m in runs for i, (agreement, _) in enumerate(m.checks) if agreement is Agreement.MISMATCH}
        points.append(Point(method.name, None if method.name == NOSPEC else method.cascade.k_matrix,
                            Spread.of([rate(m) for m in runs]), paired(runs, groups[NOSPEC]),
                            sum(map(len, first.outputs)) / first.target_forwards, len(wrong)))
    exact = sorted((p for p in points[1:] if not p.mismatches), key=lambda p: -p.tokens_per_s.median)
    return [*exact, points[0], *(p for p in points[1:] if p.mismatches)]


def _figure(point: Point) -> str:
    return f"{point.tokens_per_s.median:.1f} tok/s median ({point.vs_nospec.median:.2f}x nospec)"


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of numbers (k-matrix rows) on one line."""

    def represent_list(self, data: list) -> yaml.Node:
        flow = all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def tuned_yaml(checked: TunePlan, ranked: list[Point]) -> str:
    """The source config with the best point's k-matrix (and no `adaptive`), under a header comment
    naming the measured tokens/s of the best and the runner-up, and the command. Needs an exact point."""
    best, nospec = ranked[0], next(p for p in ranked if p.k_matrix is None)
    runner_up = ranked[1] if ranked[1].k_matrix is not None and not ranked[1].mismatches else None
    header = [
        f"Tuned by `tgi-csd tune` from {checked.config_path}: the fastest exact static k-matrix of "
        f"{len(checked.points)} tried",
        f"on {len(checked.prompts)} prompts, {checked.max_new_tokens} new tokens, batch size {checked.batch_size}, "
        f"{checked.repeats} interleaved repeats (greedy; outputs checked against the target alone).",
        f"best:      {best.name}: {_figure(best)}",
        f"runner-up: {runner_up.name}: {_figure(runner_up)}" if runner_up else "runner-up: none (one exact point)",
        f"nospec:    {nospec.tokens_per_s.median:.1f} tok/s median (the engine without drafters)",
        f"command: {checked.command}",
    ]
    if "adaptive" in checked.raw:
        header.append("The source's `adaptive` section is dropped: this k-matrix was measured static.")
    data = {key: value for key, value in checked.raw.items() if key != "adaptive"}
    data["k_matrix"] = best.k_matrix
    return "".join(f"# {line}\n" for line in header) + yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def table(ranked: list[Point]) -> Table:
    """A rich table of the ranked points; ★ marks the best."""
    from rich.table import Table

    out = Table(title="tgi-csd tune: static k-matrices, fastest exact first")
    for column in ["k-matrix", "tok/s median (min–max)", "vs nospec (min–max)", "tok/fwd", "outputs"]:
        out.add_column(column)
    for i, p in enumerate(ranked):
        rate, versus = p.tokens_per_s, p.vs_nospec
        out.add_row(p.name + (" ★" if i == 0 and p.k_matrix is not None else ""),
                    f"{rate.median:.1f} ({rate.min:.1f}–{rate.max:.1f})",
                    f"{versus.median:.2f}× ({versus.min:.2f}–{versus.max:.2f})",
                    f"{p.tokens_per_target_forward:.2f}",
                    f"MISMATCH {p.mismatches}" if p.mismatches else "exact",
                    style="bold red" if p.mismatches else ("dim" if p.k_matrix is None else None))
    return out


def tune_command(
    config: Annotated[Path, typer.Option(help="cascade YAML to tune; its k-matrix bounds the default grid")],
    prompts: Annotated[str, typer.Option(
        help="`humaneval`, `humaneval:START:STOP`, *.jsonl whose records have `prompt` or `messages` (an OpenAI "
        "chat), or a file with one prompt a line")],
    chat: Annotated[bool, typer.Option(
        help="put each text prompt in the target's chat template as a user turn (`messages` always are)")] = False,
    grid: Annotated[Path | None, typer.Option(
        help="grid YAML of k-matrices, as for `bench --k-sweep` (default: each positive k-matrix entry tried "
        "at 1..its value)")] = None,
    limit: Annotated[int, typer.Option(help="use the first N prompts (> 0)")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate per prompt (> 0)")] = 128,
    batch_size: Annotated[int, typer.Option(help="prompts per engine batch (> 0)")] = 1,
    repeats: Annotated[int, typer.Option(help="interleaved rounds over all points (> 0)")] = 3,
    seed: Annotated[int, typer.Option(help="torch seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's)")] = None,
    tolerance: Annotated[float, typer.Option(
        help="an output may differ from the target alone only where its top-2 logit gap is below this")] = 1e-3,
    out: Annotated[Path, typer.Option(help="the tuned config (YAML)")] = Path("tuned.yaml"),
) -> None:
    """Measure static k-matrices offline and write the fastest exact one into a copy of the config."""
    from tgi_csd.cli_errors import fail

    try:
        checked = plan(config=config, prompts=prompts, chat=chat, grid=grid, limit=limit, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, repeats=repeats, tolerance=tolerance, threads=threads, out=out)
    except ConfigError as error:
        fail(error)
    import torch
    from rich.console import Console

    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    console = Console(stderr=True)
    console.print(f"Tuning {config}: {len(checked.points)} static k-matrices ({checked.skipped} grid combinations "
                  f"skipped as invalid) and nospec, {len(checked.prompts)} prompts, batch size {batch_size}")
    try:
        ranked = measure(checked, console)
    except ConfigError as error:
        fail(error)
    stdout = Console()
    if not stdout.is_terminal:
        stdout.width = 160
    stdout.print(table(ranked))
    if ranked[0].k_matrix is None:
        typer.secho("MISMATCH: every k-matrix's outputs differ from the target alone; no config written",
                    fg="red", bold=True, err=True)
        raise typer.Exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tuned_yaml(checked, ranked))
    console.print(f"Wrote {out}: k_matrix {ranked[0].k_matrix} at {_figure(ranked[0])}")
    if ranked[0].vs_nospec.median < 1:
        console.print("[yellow]No k-matrix was faster than no speculation here[/]: consider `adaptive` "
                      "(speculation off when it does not pay) or no drafters.")
