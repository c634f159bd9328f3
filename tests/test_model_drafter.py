"""ModelDrafter's `min_confidence`: the same greedy draft, ended before the first unsure token."""

import pytest
import torch

from helpers import tiny_llama
from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq

PROMPTS = [[3, 9, 4, 1, 7], [12, 5, 5, 30], [40, 2, 8, 8, 8, 1, 0], [21, 22]]
K = 6


def propose(model, min_confidence: float | None) -> list[list[int]]:
    drafter = ModelDrafter("d", ModelRunner(model, "d"), min_confidence=min_confidence)
    drafter.add_rows([RowInfo(p, SamplingParams()) for p in PROMPTS])
    return drafter.propose(list(range(len(PROMPTS))), [TokenSeq(p) for p in PROMPTS], [K] * len(PROMPTS)).tokens


@torch.inference_mode()
def confidences(model, prompt: list[int], draft: list[int]) -> list[float]:
    """The model's top probability at each draft position (the draft is its greedy continuation)."""
    logits = model(torch.tensor([prompt + draft])).logits[0, len(prompt) - 1 : -1]
    probs = logits.softmax(-1)
    assert probs.argmax(-1).tolist() == draft
    return probs.amax(-1).tolist()


def test_min_confidence_ends_each_draft_before_its_first_unsure_token():
    model = tiny_llama(vocab=64, init=0.6)
    full = propose(model, None)
    assert all(len(d) == K for d in full)
    sure = [confidences(model, p, d) for p, d in zip(PROMPTS, full)]
    values = sorted(v for row in sure for v in row)
    middle = len(values) // 2
    threshold = (values[middle - 1] + values[middle]) / 2  # half the positions fall below it, none near it
    expected = [next((j for j, v in enumerate(row) if v < threshold), K) for row in sure]
    assert 0 < sum(expected) < K * len(PROMPTS)  # some tokens kept, some dropped

    gated = propose(model, threshold)
    assert gated == [d[:e] for d, e in zip(full, expected)]


def test_min_confidence_is_for_greedy_drafting_only():
    with pytest.raises(ValueError, match="greedy"):
        ModelDrafter("d", ModelRunner(tiny_llama(), "d"), sample=True, min_confidence=0.5)
