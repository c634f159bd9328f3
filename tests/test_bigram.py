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


def truncations(path, count: int = 10) -> list[int]:
    """`count` offsets spread over the file, from its first byte to 90% of it."""
    size = path.stat().st_size
    return sorted({size * i // count for i in range(count)})


def test_a_truncated_table_is_one_clear_error(tmp_path):
    tokenizer = CharTokenizer()
    path = tmp_path / "t.safetensors"
    BigramTable.build(tokenizer, ["hello world, hello bigram"], vocab_size=26).save(path)
    whole = path.read_bytes()
    for offset in truncations(path):
        path.write_bytes(whole[:offset])
        with pytest.raises(ConfigError, match=rf"bigram: cannot read {path} .*rebuild it with `tgi-csd bigram build`"):
            BigramTable.load(path, tokenizer)


def test_a_table_with_ids_outside_its_vocabulary_is_refused(tmp_path):
    import numpy as np

    path = tmp_path / "t.safetensors"
    BigramTable(np.array([1, 2, 99]), "x").save(path)
    with pytest.raises(ConfigError, match="outside"):
        BigramTable.load(path)


def test_saving_is_atomic(tmp_path, monkeypatch):
    """A save that dies half way leaves the old table whole and no scratch file behind."""
    from tgi_csd.drafters import bigram

    tokenizer = CharTokenizer()
    path = tmp_path / "t.safetensors"
    BigramTable.build(tokenizer, ["abab"], vocab_size=26).save(path)
    before = path.read_bytes()

    def dies_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(bigram, "save_file", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        BigramTable.build(tokenizer, ["zzz"], vocab_size=26).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
