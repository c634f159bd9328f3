"""TGI's stock n-gram rule: first occurrence of the newest token in the history before the last step."""

import ast
import os
import random
import tarfile
from pathlib import Path

import pytest
import torch

from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.plugin.strategies.ngram import ngram_proposal
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq


def test_first_match_in_history_before_last_step():
    ngram = TGINGramDrafter()
    prompt_and_first = [3, 1, 4, 1, 5, 9, 1]  # prompt [3, 1, 4, 1, 5, 9], prefill gave 1
    ngram.add_rows([RowInfo(prompt_and_first, SamplingParams())])
    # Seed 1: first occurrence at index 1 of the prompt, so 4, 1, 5.
    assert ngram.propose([0], [TokenSeq(prompt_and_first)], [3]).tokens == [[4, 1, 5]]
    history = [*prompt_and_first, 4, 2, 6]  # a step accepted 4, 2, 6
    ngram.commit([history])
    # Seed 6 is not in the history before the step (7 tokens): position 0 + 1, so tokens 1..3.
    assert ngram.propose([0], [TokenSeq(history)], [3]).tokens == [[1, 4, 1]]


def test_reads_past_the_searched_history_are_clamped():
    ngram = TGINGramDrafter()
    history = [2, 7, 8, 2]
    ngram.add_rows([RowInfo(history, SamplingParams())])
    # Seed 2 first at index 0: 7, 8, then clamped to the last searched token (8).
    assert ngram.propose([0], [TokenSeq(history)], [4]).tokens == [[7, 8, 8, 8]]


# -- pinned to TGI 3.3.7's own function ---------------------------------------------------------------
ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "tgi" / "text-generation-inference-3.3.7.tar.gz"


def tgi_create_n_gram_speculation():
    """`create_n_gram_speculation` as TGI 3.3.7 ships it: its source read from the archive at test time
    (never copied here) and compiled alone, with torch as its only global."""
    archive = Path(os.environ.get("TGI_ARCHIVE", ARCHIVE))
    if not archive.is_file():
        pytest.skip(f"TGI's source archive is not at {archive} (set TGI_ARCHIVE)")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("server/text_generation_server/utils/tokens.py"))
        source = tar.extractfile(member).read().decode()
    [function] = [node for node in ast.parse(source).body
                  if isinstance(node, ast.FunctionDef) and node.name == "create_n_gram_speculation"]
    namespace = {"torch": torch}
    exec(compile(ast.Module([function], type_ignores=[]), "tgi:tokens.py", "exec"), namespace)
    return namespace["create_n_gram_speculation"]


def test_the_rule_is_tgis_own_on_random_inputs():
    """At batch size 1 (TGI pads batched rows to the longest, which no per-request rule can imitate), the
    `ngram` strategy's proposal and the drafter's equal TGI's for 2,000 random histories."""
    tgi = tgi_create_n_gram_speculation()
    rng = random.Random(0)
    for _ in range(2000):
        vocab, speculate = rng.choice([3, 8, 50]), rng.randint(1, 8)
        history = [rng.randrange(vocab) for _ in range(rng.randint(2, 40))]
        accepted = rng.randint(1, min(speculate + 1, len(history) - 1))
        before = torch.tensor([history[: len(history) - accepted]])
        new = torch.tensor(history[len(history) - accepted :])
        expected = tgi(before, new, torch.tensor([accepted]), speculate, False)[0].tolist()
        assert ngram_proposal(history, accepted, speculate) == expected, (history, accepted, speculate)
        drafter = TGINGramDrafter()
        drafter.add_rows([RowInfo(history[: len(history) - accepted], SamplingParams())])
        drafter.commit([history])
        assert drafter.propose([0], [TokenSeq(history)], [speculate]).tokens == [expected]
