"""The bench's options, parsed and checked into a `Plan` before any model loads (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tgi_csd.bench.ksweep import load_grid
from tgi_csd.config import CascadeConfig, load_config
from tgi_csd.errors import ConfigError
from tgi_csd.prompts import Prompt, load_prompts, prompt_forms

METHODS = ("ar", "nospec", "hf-assisted", "hf-prompt-lookup", "ngram", "sd", "mag", "csd", "csd-adaptive",
           "csd-lenient")
DEFAULT_METHODS = ("ar", "hf-assisted", "hf-prompt-lookup", "ngram", "sd", "mag", "csd")
#: methods whose draft length `--k METHOD=K` sets
TUNABLE = ("hf-assisted", "hf-prompt-lookup", "ngram", "sd", "mag")


def parse_methods(text: str) -> list[str]:
    """`--methods`: a comma list of known method names, without repeats, in the order given; `ar` (the
    baseline every speedup is measured against) is run first even when not named."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConfigError(f"--methods: unknown method {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"use a comma list of: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods: {text!r} names a method twice")
    return names if "ar" in names else ["ar", *names]


def parse_ks(items: list[str]) -> dict[str, int]:
    """`--k METHOD=K` (repeatable): the draft length of a single-drafter method."""
    ks = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in TUNABLE or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--k: expected METHOD=K with K >= 1 and METHOD one of {', '.join(TUNABLE)}; "
                              f"got {item!r}")
        ks[name] = int(value)
    return ks


def parse_batch_sizes(text: str) -> list[int]:
    """`--batch-sizes`: a comma list of distinct positive integers, run in increasing order."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts) or len(set(map(int, parts))) != len(parts):
        raise ConfigError(f"--batch-sizes: expected a comma list of distinct integers > 0, got {text!r}")
    return sorted(map(int, parts))


def check_at_least(option: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{option}: must be >= {minimum:g}, got {value:g}")


@dataclass
class Plan:
    """Checked options: what to run, on which prompts; `points` is the k-sweep's cascades (run after
    `methods`, which then defaults to `ar` alone), else None."""

    cascade: CascadeConfig
    prompts: list[Prompt]
    chat: bool
    methods: list[str]
    batch_sizes: list[int]
    ks: dict[str, int]
    single_drafter: str | None
    leniency: float
    points: list[CascadeConfig] | None
    settings: dict
    out: Path


def plan(*, config: Path, prompts: Path | None, chat: bool, limit: int, max_new_tokens: int, repeats: int, seed: int,
         threads: int | None, methods: str | None, batch_sizes: str, k: list[str] | None,
         single_drafter: str | None, leniency: float, k_sweep: Path | None, tolerance: float, out: Path) -> Plan:
    """Check every option (reading the config, prompts and grid, loading no model)."""
    check_at_least("--max-new-tokens", max_new_tokens, 1)
    check_at_least("--repeats", repeats, 1)
    check_at_least("--leniency", leniency, 1)
    check_at_least("--tolerance", tolerance, 0)
    if threads is not None:
        check_at_least("--threads", threads, 1)
    names = parse_methods(methods or ("ar" if k_sweep is not None else ",".join(DEFAULT_METHODS)))
    sizes = parse_batch_sizes(batch_sizes)
    ks = parse_ks(k or [])
    cascade = load_config(config)
    check_at_least("--limit", limit, 1)
    texts = load_prompts(str(prompts) if prompts else "humaneval")[:limit]
    settings: dict = {
        "config": str(config), "cascade": cascade.model_dump(mode="json"),
        "prompt_source": str(prompts) if prompts else "HumanEval", "prompts": len(texts), "chat": chat,
        **prompt_forms(texts, chat),
        "max_new_tokens": max_new_tokens, "repeats": repeats, "seed": seed, "threads": threads,
        "batch_sizes": sizes,
        "tolerance": tolerance,
        "methods": names, "k": ks, "single_drafter": single_drafter, "leniency": leniency,
    }
    points = None
    if k_sweep is not None:
        points, skipped = load_grid(k_sweep, cascade)
        settings["k_sweep"] = {"grid": str(k_sweep), "points": len(points), "skipped": skipped}
    return Plan(cascade, texts, chat, names, sizes, ks, single_drafter, leniency, points, settings, out)
