"""Engine on a tiny random Llama: greedy outputs equal the target alone, batching and join/leave."""

import pytest
import torch
from pydantic import ValidationError

from helpers import build_engine, tiny_llama
from tgi_csd.engine import Request
from tgi_csd.reference import Agreement, compare, reference_generate

PROMPTS = [
    [1, 2, 3, 4, 5, 1, 2, 3],
    [7, 8, 9],
    [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    [5],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
    [40, 41, 42, 40, 41],
    [60, 2, 33, 6, 20],
    [9, 8, 7, 6, 5, 4, 3, 2, 1],
]
TOLERANCE = 1e-4  # near-tie: top-2 logit gap of the reference below this


@pytest.mark.parametrize("layout", ["none", "mag", "ngram", "sd", "csd", "csd-lead"])
def test_greedy_equals_target_alone(target, layout):
    engine = build_engine(target, layout)
    results = engine.generate([Request(prompt_ids=p, max_new_tokens=24) for p in PROMPTS])
    near_ties = 0
    for prompt, result in zip(PROMPTS, results):
        agreement, position = compare(result.token_ids, reference_generate(target, prompt, 24, None), TOLERANCE)
        assert agreement is not Agreement.MISMATCH, f"{layout}: prompt {prompt} differs at {position}"
        near_ties += agreement is Agreement.NEAR_TIE
    assert near_ties <= 1, f"{near_ties} near-ties: the tolerance hides real differences"
    report = engine.report()
    assert report["generated_tokens"] == 24 * len(PROMPTS)
    accepted = sum(pair.accepted for (reviewer, _), pair in engine.stats.pairs.items() if reviewer == "target")
    if layout != "none":  # (tokens per forward cannot tell: with 8 rows even no speculation makes 8)
        assert accepted > 0, "drafts were never accepted: acceptance is untested"


def test_batch_of_mixed_lengths_equals_each_alone(target):
    batch = build_engine(target, "csd").generate([Request(prompt_ids=p, max_new_tokens=20) for p in PROMPTS])
    for prompt, result in zip(PROMPTS, batch):
        alone = build_engine(target, "csd").generate([Request(prompt_ids=prompt, max_new_tokens=20)])[0]
        assert result.token_ids == alone.token_ids


def test_requests_join_and_leave_mid_run(target):
    engine = build_engine(target, "csd")
    lengths = [3, 17, 9, 25]
    for prompt, n in zip(PROMPTS[:2], lengths[:2]):
        engine.add_request(Request(prompt_ids=prompt, max_new_tokens=n, id=len(engine.running) + len(engine.waiting)))
    finished = {}
    steps = 0
    while engine.has_work():
        for result in engine.step():
            finished[result.id] = result
        steps += 1
        if steps == 3:  # two more join while the first ones run (the short one has left already)
            for i in (2, 3):
                engine.add_request(Request(prompt_ids=PROMPTS[i], max_new_tokens=lengths[i], id=i))
    assert sorted(finished) == [0, 1, 2, 3]
    for i in range(4):
        alone = build_engine(target, "none").generate([Request(prompt_ids=PROMPTS[i], max_new_tokens=lengths[i])])
        assert finished[i].token_ids == alone[0].token_ids
        assert len(finished[i].token_ids) == lengths[i]
        assert finished[i].finish_reason == "length"


def test_eos_and_stop_strings_end_sequences(target):
    plain = build_engine(target, "none").generate([Request(prompt_ids=PROMPTS[0], max_new_tokens=12)])[0]
    eos = plain.token_ids[5]
    first = plain.token_ids.index(eos)
    result = build_engine(target, "mag", eos=eos).generate([Request(prompt_ids=PROMPTS[0], max_new_tokens=12)])[0]
    assert result.token_ids == plain.token_ids[: first + 1] and result.finish_reason == "eos"
    ignored = build_engine(target, "mag", eos=eos).generate(
        [Request(prompt_ids=PROMPTS[0], max_new_tokens=12, ignore_eos=True)]
    )[0]
    assert ignored.token_ids == plain.token_ids
    # Stop string: the stub tokenizer decodes token t as one letter.
    stop = "".join(chr(ord("a") + t % 26) for t in plain.token_ids[3:5])
    stopped = build_engine(target, "csd").generate([Request(prompt_ids=PROMPTS[0], max_new_tokens=12, stop=[stop])])[0]
    assert stopped.finish_reason == "stop"
    assert plain.token_ids[: len(stopped.token_ids)] == stopped.token_ids
    assert len(stopped.token_ids) <= 5


def test_drafts_never_exceed_max_new_tokens(target):
    """A draft never reaches past the request's last token: the target is never fed more than the prompt
    and `max_new_tokens - 1` generated tokens (MaG would happily draft on, the prompt being periodic)."""
    for n in (1, 2, 5, 9):
        engine = build_engine(target, "csd")
        fed = []
        forward = engine.target.forward

        def recording(rows, seqs, num_logits, forward=forward, fed=fed):
            fed.extend(len(seq) for seq in seqs)
            return forward(rows, seqs, num_logits)

        engine.target.forward = recording
        result = engine.generate([Request(prompt_ids=PROMPTS[4], max_new_tokens=n)])[0]
        assert len(result.token_ids) == n
        assert max(fed) == len(PROMPTS[4]) + n - 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"prompt_ids": []}, "prompt_ids"), ({"prompt_ids": [1], "max_new_tokens": 0}, "max_new_tokens"),
     ({"prompt_ids": [1], "max_new_tokens": -3}, "max_new_tokens")],
)
def test_bad_requests_name_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        Request(**kwargs)


def test_model_drafter_proposals_are_its_greedy_continuation():
    """The vertical cascade is exact per level: a drafter sped up by MaG proposes its own greedy tokens."""
    target = tiny_llama(layers=4)
    engine = build_engine(target, "csd")
    big = engine.drafters[0]
    from tgi_csd.drafters.base import RowInfo
    from tgi_csd.sampling import SamplingParams
    from tgi_csd.tokens import TokenSeq

    prompt = PROMPTS[2]
    for drafter in engine.drafters:
        drafter.add_rows([RowInfo(list(prompt), SamplingParams())])
    proposal = big.propose([0], [TokenSeq(list(prompt))], [6])
    with torch.inference_mode():
        expected = big.runner.model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6,
                                             do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    assert proposal.tokens == [expected]
