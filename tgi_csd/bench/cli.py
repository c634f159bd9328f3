"""`tgi-csd bench`: the command. Options are checked before any model loads; bad input exits 2 naming
the option, an output that differs from the target alone (not at a near-tie) exits 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tgi_csd.bench.options import DEFAULT_METHODS, METHODS, TUNABLE, Plan, plan
from tgi_csd.errors import ConfigError


def bench_command(
    config: Annotated[Path, typer.Option(help="cascade YAML: the target, the drafters and the k-matrix `csd` runs")],
    prompts: Annotated[Path | None, typer.Option(
        help="*.jsonl whose records have `prompt` (text) or `messages` (an OpenAI chat), or any other file with "
        "one prompt a line (default: HumanEval)")] = None,
    chat: Annotated[bool, typer.Option(
        help="put each text prompt in the target's chat template as a user turn (`messages` always are)")] = False,
    limit: Annotated[int, typer.Option(help="use the first N prompts (> 0)")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate per prompt (> 0)")] = 128,
    repeats: Annotated[int, typer.Option(help="interleaved rounds over all methods (> 0)")] = 3,
    seed: Annotated[int, typer.Option(help="torch seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's)")] = None,
    methods: Annotated[str | None, typer.Option(
        help=f"comma list of: {', '.join(METHODS)}; `ar` always runs (default: {', '.join(DEFAULT_METHODS)}; "
        "with --k-sweep: `ar` alone, the named methods run next to the grid points)")] = None,
    batch_sizes: Annotated[str, typer.Option(
        help="comma list; hf-assisted and hf-prompt-lookup run at batch size 1 only")] = "1,4,16",
    k: Annotated[list[str] | None, typer.Option(
        "--k", help=f"METHOD=K: draft tokens per target forward for {', '.join(TUNABLE)} (repeatable) "
        "(default: the cascade's, the sum of the k-matrix's first row; hf-assisted: transformers' own)")] = None,
    single_drafter: Annotated[str | None, typer.Option(
        help="the model drafter `sd` and `hf-assisted` use (default: the largest)")] = None,
    leniency: Annotated[float, typer.Option(help="csd-lenient: leniency of every model drafter (>= 1)")] = 2.0,
    k_sweep: Annotated[Path | None, typer.Option(
        help="grid YAML of k-matrices (see tgi_csd/bench/ksweep.py): run `csd` (static) at every point "
        "next to --methods and mark the best")] = None,
    tolerance: Annotated[float, typer.Option(
        help="an output may differ from the target alone only where its top-2 logit gap is below this")] = 1e-3,
    out: Annotated[Path, typer.Option(help="folder for results.json, results.md and PNG plots")] = Path("bench-out"),
) -> None:
    """Benchmark tokens/s against plain decoding, transformers' assisted generation and prompt lookup,
    TGI's n-gram rule and single-draft speculation, on the same prompts, interleaved batch by batch."""
    from tgi_csd.cli_errors import fail

    try:
        checked = plan(config=config, prompts=prompts, chat=chat, limit=limit, max_new_tokens=max_new_tokens,
                       repeats=repeats, seed=seed, threads=threads, methods=methods, batch_sizes=batch_sizes, k=k,
                       single_drafter=single_drafter, leniency=leniency, k_sweep=k_sweep, tolerance=tolerance, out=out)
        mismatches = measure(checked)
    except ConfigError as error:
        fail(error)
    if mismatches:
        typer.secho(f"MISMATCH: {mismatches} outputs differ from the target alone; see {out / 'results.md'}",
                    fg="red", bold=True, err=True)
        raise typer.Exit(1)


def measure(checked: Plan) -> int:
    """Load the models, run the plan, write results and plots; the number of mismatching outputs."""
    import torch
    from rich.console import Console
    from rich.markup import escape

    from tgi_csd.bench import report, runner
    from tgi_csd.bench.cost import compute_params, relative_costs
    from tgi_csd.bench.environment import environment
    from tgi_csd.bench.ksweep import label
    from tgi_csd.bench.loading import BenchModels
    from tgi_csd.bench.methods import EngineMethod, NotApplicable, build_methods
    from tgi_csd.bench.plots import write_plots
    from tgi_csd.bench.summary import headline, summarize

    settings = checked.settings
    torch.manual_seed(settings["seed"])
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])
    console = Console(stderr=True)
    console.print(f"Loading {escape(checked.cascade.target.model)} and its drafters")
    models = BenchModels(checked.cascade)
    entries = [*build_methods(checked.methods, models, checked.ks, checked.single_drafter, checked.leniency),
               *(EngineMethod(label(p.k_matrix), models, p) for p in checked.points or [])]
    methods = [e for e in entries if not isinstance(e, NotApplicable)]
    costs = relative_costs(models.target, models.assets.models)
    prompt_ids = [models.encode(p, checked.chat) for p in checked.prompts]
    refs = runner.references(models, prompt_ids, settings["max_new_tokens"], console)
    measurements = runner.run_interleaved(methods, prompt_ids, refs, checked.batch_sizes, settings["repeats"],
                                          settings["max_new_tokens"], settings["tolerance"], console)
    rows = summarize(entries, measurements, checked.batch_sizes, costs)
    static = [label(p.k_matrix) for p in checked.points] if checked.points is not None else ["csd"]
    results = report.Results(settings=settings, environment=environment(models.engine_cpu_kernel),
                             costs={"target_params": compute_params(models.target), "drafters": costs},
                             rows=rows, headline=headline(rows, static))
    report.write(results, checked.out)
    write_plots(results, checked.out)
    stdout = Console()
    if not stdout.is_terminal:
        stdout.width = 200  # a file or pipe: keep the table's rows on one line
    stdout.print(report.console_table(results))
    stdout.print(escape(report.summary_text(results)))
    console.print(f"Wrote {checked.out}: results.json, results.md, speedup.png, tokens_per_forward.png, batch.png")
    return results.mismatches
