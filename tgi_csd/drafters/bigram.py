"""Bigram table: the most frequent next token after each token, built from a corpus."""

from __future__ import annotations

import os
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tgi_csd.errors import ConfigError, reading
from tgi_csd.models import cache_dir, console, tokenizer_fingerprint


class BigramTable:
    """`next_token[t]` is the argmax next token after `t` in the corpus (the corpus' most
    frequent token where `t` was never seen)."""

    def __init__(self, next_token: np.ndarray, fingerprint: str) -> None:
        self.next_token = next_token.astype(np.int64)
        self.fingerprint = fingerprint
        self._as_list: list[int] = self.next_token.tolist()

    @property
    def vocab_size(self) -> int:
        return len(self._as_list)

    def __getitem__(self, token: int) -> int:
        return self._as_list[token] if token < len(self._as_list) else 0

    @classmethod
    def build(cls, tokenizer, texts: Iterable[str], vocab_size: int) -> BigramTable:
        pairs = []
        unigram = np.zeros(vocab_size, dtype=np.int64)
        for text in texts:
            ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids, dtype=np.int64)
            if len(ids) < 2:
                continue
            pairs.append(ids[:-1] * vocab_size + ids[1:])
            unigram += np.bincount(ids, minlength=vocab_size)[:vocab_size]
        if not pairs:
            raise ConfigError("corpus: no text with two or more tokens; pass files with real text")
        keys, freq = np.unique(np.concatenate(pairs), return_counts=True)
        prev, nxt = keys // vocab_size, keys % vocab_size
        # For each prev keep the most frequent next (ties: smallest id, as np.lexsort is stable).
        order = np.lexsort((nxt, -freq, prev))
        prev, nxt = prev[order], nxt[order]
        first = np.ones(len(prev), dtype=bool)
        first[1:] = prev[1:] != prev[:-1]
        table = np.full(vocab_size, int(unigram.argmax()), dtype=np.int64)
        table[prev[first]] = nxt[first]
        return cls(table, tokenizer_fingerprint(tokenizer))

    def save(self, path: Path) -> None:
        """Written to a temporary file beside `path`, then renamed: readers never see a partial table."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            scratch = Path(handle.name)
        try:
            save_file({"next_token": self.next_token}, str(scratch), metadata={"tokenizer": self.fingerprint})
            os.replace(scratch, path)
        finally:
            scratch.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, tokenizer=None) -> BigramTable:
        if path.suffix != ".safetensors":
            raise ConfigError(f"bigram: {path} is not a .safetensors file; build one with `tgi-csd bigram build`")
        if not path.is_file():
            raise ConfigError(f"bigram: {path} does not exist; build it with `tgi-csd bigram build`")
        from safetensors import safe_open

        with reading("bigram", path, "rebuild it with `tgi-csd bigram build` (or delete it: the default table is "
                     "rebuilt on next use)"):
            with safe_open(str(path), "np") as handle:
                fingerprint = (handle.metadata() or {}).get("tokenizer", "")
            next_token = load_file(str(path))["next_token"]
            if next_token.ndim != 1 or not len(next_token) or next_token.dtype.kind not in "iu":
                raise ValueError(f"next_token must be a non-empty integer vector, got {next_token.dtype} "
                                 f"{next_token.shape}")
            if int(next_token.min()) < 0 or int(next_token.max()) >= len(next_token):
                raise ValueError(f"next_token holds ids outside [0, {len(next_token)})")
        table = cls(next_token, fingerprint)
        if tokenizer is not None and fingerprint != tokenizer_fingerprint(tokenizer):
            raise ConfigError(
                f"bigram: {path} was built for another tokenizer; rebuild it with "
                "`tgi-csd bigram build --tokenizer <target dir>`"
            )
        return table


def stdlib_corpus(max_bytes: int = 4_000_000) -> list[str]:
    """Python standard-library sources (PSF licence): the default code corpus for bigram tables."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="ignore")
        texts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return texts


def default_bigram(tokenizer, vocab_size: int) -> BigramTable:
    """The bigram table for this tokenizer, built from `stdlib_corpus` once and cached."""
    path = cache_dir() / "bigram" / f"{tokenizer_fingerprint(tokenizer)}-{vocab_size}.safetensors"
    if path.is_file():
        return BigramTable.load(path, tokenizer)
    with console().status(f"Building the default bigram table into {path} (once)"):
        table = BigramTable.build(tokenizer, stdlib_corpus(), vocab_size)
        table.save(path)
    return table
