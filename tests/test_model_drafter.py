"""ModelDrafter's `min_confidence` (the same greedy draft, ended before the first unsure token) and
`prefill_chunk` (a joining prompt reaches the drafter a chunk per step)."""

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


def test_backlog_counts_the_tokens_a_drafters_cache_still_lacks():
    drafter = ModelDrafter("d", ModelRunner(tiny_llama(vocab=64), "d"))
    drafter.add_rows([RowInfo(p, SamplingParams()) for p in PROMPTS[:2]])
    rows, seqs = [0, 1], [TokenSeq(p) for p in PROMPTS[:2]]
    assert drafter.backlog(rows, seqs) == [len(p) for p in PROMPTS[:2]]  # nothing fed yet
    drafter.propose(rows, seqs, [2, 2])
    histories = [[*p, 1] for p in PROMPTS[:2]]  # the target took a token neither draft began with
    drafter.commit(histories)
    assert drafter.backlog(rows, [TokenSeq(h) for h in histories]) == [1, 1]
    later = [[*h, 2, 3, 4] for h in histories]  # steps the drafter sat out
    drafter.commit(later)
    assert drafter.backlog(rows, [TokenSeq(h) for h in later]) == [4, 4]


def test_min_confidence_is_for_greedy_drafting_only():
    with pytest.raises(ValueError, match="greedy"):
        ModelDrafter("d", ModelRunner(tiny_llama(), "d"), sample=True, min_confidence=0.5)


def test_prefill_chunk_bounds_each_steps_catch_up_and_outputs_stay_exact():
    """Long prompts reach a cut drafter `prefill_chunk` tokens per step, while MaG drafts for those rows; no
    drafter forward feeds a row more than the chunk plus one draft, and outputs equal the target's greedy."""
    from helpers import StubTokenizer, hf_greedy
    from tgi_csd.builder import ModelLevel
    from tgi_csd.drafters.mag import MaGDrafter
    from tgi_csd.engine import Engine, Request
    from tgi_csd.models import cut_from_target

    target = tiny_llama(vocab=64, layers=4, init=0.4)
    prompts = [[(7 * i + j * j) % 60 + 2 for j in range(30 + 5 * i)] for i in range(3)]
    chunk, k = 8, 3
    runner = ModelRunner(cut_from_target(target, 2), "cut")
    widths: list[int] = []
    observe = runner.cost.observe
    runner.cost.observe = lambda rows, tokens, *rest: (widths.append(tokens), observe(rows, tokens, *rest))
    level = ModelLevel("cut", runner, prefill_chunk=chunk)
    engine = Engine.assemble(ModelRunner(target, "target"), [level, MaGDrafter(None)], [[k, 2], [0, 2]],
                             StubTokenizer())
    results = engine.generate([Request(prompt_ids=p, max_new_tokens=12) for p in prompts])
    assert [r.token_ids for r in results] == [hf_greedy(target, p, 12) for p in prompts]
    assert max(widths) <= len(prompts) * (chunk + k)  # rows x widest row: never a whole prompt (30-40 tokens)
    assert runner.forwards > 0 and engine.stats.pairs["target", "mag"].proposed > 0
