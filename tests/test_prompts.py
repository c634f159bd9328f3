"""Prompt sets: HumanEval slices, JSONL (text or chat records) and plain-text files, one clear error for bad
files; token ids raw or through the chat template."""

import json

import pytest

from helpers import TINY_CHAT_TEMPLATE, save_tiny_model_dir
from tgi_csd.errors import ConfigError
from tgi_csd.prompts import encode_prompt, load_prompts, prompt_forms


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


def test_chat_records_load_and_bad_ones_name_the_line(tmp_path):
    jsonl = tmp_path / "chats.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    jsonl.write_text(json.dumps({"messages": chat}) + "\n" + json.dumps({"prompt": "plain"}) + "\n")
    assert load_prompts(str(jsonl)) == [chat, "plain"]
    assert prompt_forms(load_prompts(str(jsonl)), chat=False) == {
        "chat_template": True, "text_prompts": 1, "chat_prompts": 1}
    assert prompt_forms(["a", "b"], chat=False)["chat_template"] is False
    for bad in ([], [{"role": "user"}], [{"role": "robot", "content": "x"}],
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]):
        jsonl.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"messages": bad}) + "\n")
        with pytest.raises(ConfigError, match=r"--prompts: .* line 2: `messages` must be .* ending with a user turn"):
            load_prompts(str(jsonl))


def test_encode_prompt_applies_the_chat_template_to_chats_and_on_request(tmp_path):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(save_tiny_model_dir(tmp_path / "plain"))
    templated = AutoTokenizer.from_pretrained(save_tiny_model_dir(tmp_path / "chat", chat_template=TINY_CHAT_TEMPLATE))
    assert encode_prompt(templated, "w5 w6") == [5, 6]  # text as it is
    assert encode_prompt(templated, "w5 w6", chat=True) == [2, 5, 6, 2]  # one user turn, the assistant's prompt
    chat = [{"role": "system", "content": "w7"}, {"role": "user", "content": "w5"}]
    assert encode_prompt(templated, chat) == [2, 7, 2, 5, 2]  # a chat always goes through the template
    assert encode_prompt(plain, "w5 w6") == [5, 6]
    for prompt, chat_flag in (("w5", True), (chat, False)):
        with pytest.raises(ConfigError, match="--chat: the model's tokenizer has no chat template"):
            encode_prompt(plain, prompt, chat_flag)


def test_the_committed_chat_set_has_fifty_distinct_prompts_and_a_licence():
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data"
    prompts = load_prompts(str(data / "chat-prompts.jsonl"))
    assert len(prompts) >= 50 and len({json.dumps(p) for p in prompts}) == len(prompts)
    assert any(not isinstance(p, str) for p in prompts), "some records are chats (`messages`)"
    readme = (data / "README.md").read_text()
    assert "| `chat-prompts.jsonl` |" in readme and "Apache-2.0" in readme
