"""Prompt sets: HumanEval slices, JSONL and plain-text files, one clear error for bad files."""

import pytest

from tgi_csd.errors import ConfigError
from tgi_csd.prompts import load_prompts


def test_prompt_files(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "def f():", "id": 1}\n\n{"prompt": "line one\\nline two"}\n')
    assert load_prompts(str(jsonl)) == ["def f():", "line one\nline two"]
    text = tmp_path / "p.txt"
    text.write_text("a\n\nb\nc\n")
    assert load_prompts(str(text)) == ["a", "b", "c"]
    jsonl.write_text('{"text": "no prompt"}\n')
    with pytest.raises(ConfigError, match=r"--prompts: .* line 1 needs .* `prompt`"):
        load_prompts(str(jsonl))
    jsonl.write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1 is not JSON"):
        load_prompts(str(jsonl))
    text.write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts(str(text), "--val-prompts")
    with pytest.raises(ConfigError, match="cannot read"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_humaneval_slices():
    assert len(load_prompts("humaneval")) == 164
    first_two = load_prompts("humaneval:0:2")
    assert len(first_two) == 2 and first_two[0].startswith("from typing import List")
    assert load_prompts("humaneval:162:") == load_prompts("humaneval")[162:]
    with pytest.raises(ConfigError, match="humaneval:START:STOP"):
        load_prompts("humaneval:a:b")
