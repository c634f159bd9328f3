"""Bigram tables: argmax next token, safetensors round trip, tokenizer fingerprint check."""

import pytest

from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.errors import ConfigError


class CharTokenizer:
    """One token per character (ids = ord - 97), vocabulary a..z."""

    def __init__(self, letters: str = "abcdefghijklmnopqrstuvwxyz") -> None:
        self.letters = letters

    def __call__(self, text: str, add_special_tokens: bool = False):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=[self.letters.index(c) for c in text if c in self.letters])

    def get_vocab(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.letters)}


def test_build_picks_most_frequent_next_and_unigram_fallback():
    table = BigramTable.build(CharTokenizer(), ["abab", "ac", "bbb"], vocab_size=26)
    assert table[0] == 1  # a -> b twice, a -> c once
    assert table[1] == 1  # b -> b twice (bbb), b -> a once
    assert table[25] == 1  # z unseen: the most frequent token overall (b)


def test_round_trip_and_fingerprint(tmp_path):
    tokenizer = CharTokenizer()
    table = BigramTable.build(tokenizer, ["hello world"], vocab_size=26)
    path = tmp_path / "t.safetensors"
    table.save(path)
    loaded = BigramTable.load(path, tokenizer)
    assert loaded.next_token.tolist() == table.next_token.tolist()
    with pytest.raises(ConfigError, match="another tokenizer"):
        BigramTable.load(path, CharTokenizer("zyxwvutsrqponmlkjihgfedcba"))


def test_bad_paths_and_empty_corpus(tmp_path):
    with pytest.raises(ConfigError, match="not a .safetensors"):
        BigramTable.load(tmp_path / "t.json")
    with pytest.raises(ConfigError, match="does not exist"):
        BigramTable.load(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="corpus"):
        BigramTable.build(CharTokenizer(), ["", "a"], vocab_size=26)
