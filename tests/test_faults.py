"""Faults and limits: bad requests are refused at `add_request` while the batch keeps running; drafters
that break the drafting contract are cut away (counted, outputs unchanged); the target KV budget and
admission never starve anyone; the uniform stream is lazy."""

import pytest
import torch

from helpers import StatelessDrafter, StubTokenizer, build_engine, tiny_llama
from tgi_csd.drafters.base import Proposal
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import RequestError
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams, UniformStream

PROMPT = [5, 9, 12, 5, 9]


@pytest.fixture(scope="module")
def target():
    return tiny_llama(vocab=64, layers=4, seed=1, init=0.3)


def alone(target, request: Request) -> list[int]:
    return build_engine(target, "none").generate([request.model_copy()])[0].token_ids


# -- requests refused at add_request -----------------------------------------------------------------
def test_a_bad_request_joining_a_running_batch_is_refused_and_the_batch_goes_on(target):
    engine = build_engine(target, "csd")
    good = Request(prompt_ids=PROMPT, max_new_tokens=12, id=1)
    engine.add_request(good)
    engine.step()
    with pytest.raises(RequestError, match=r"prompt_ids: token id 64 is outside the target's vocabulary \[0, 64\)"):
        engine.add_request(Request(prompt_ids=[3, 64], max_new_tokens=4, id=2))
    with pytest.raises(RequestError, match="prompt_ids: token id -1"):
        engine.add_request(Request(prompt_ids=[-1], max_new_tokens=4, id=3))
    results = []
    while engine.has_work():
        results += engine.step()
    assert [r.id for r in results] == [1]
    assert results[0].token_ids == alone(target, good)


def test_a_live_request_id_cannot_be_reused(target):
    engine = build_engine(target, "mag")
    engine.add_request(Request(prompt_ids=PROMPT, max_new_tokens=3, id=7))
    with pytest.raises(RequestError, match="id: request 7 is already queued or running"):
        engine.add_request(Request(prompt_ids=[1, 2], max_new_tokens=3, id=7))
    engine.step()  # now running
    with pytest.raises(RequestError, match="id: request 7"):
        engine.add_request(Request(prompt_ids=[1, 2], max_new_tokens=3, id=7))
    while engine.has_work():
        engine.step()
    engine.generate([Request(prompt_ids=[1, 2], max_new_tokens=3, id=7)])  # finished ids may come back
    with pytest.raises(RequestError, match=r"id: requests \[8\] appear more than once"):
        engine.generate([Request(prompt_ids=[1], max_new_tokens=2, id=8), Request(prompt_ids=[2], max_new_tokens=2,
                                                                                   id=8)])
    with pytest.raises(RequestError, match="prompt_ids"):  # the good first request is not left queued
        engine.generate([Request(prompt_ids=[1], max_new_tokens=2, id=9), Request(prompt_ids=[99], id=10)])
    assert not engine.has_work()


def test_requests_beyond_the_target_positions_are_refused():
    small = tiny_llama(vocab=64, layers=2)
    small.config.max_position_embeddings = 32
    engine = Engine.assemble(ModelRunner(small, "target"), [], [[]], StubTokenizer())
    engine.add_request(Request(prompt_ids=[1] * 20, max_new_tokens=13))  # 32 positions: fits exactly
    with pytest.raises(RequestError, match=r"prompt_ids \+ max_new_tokens: 20 \+ 14 tokens need 33 positions, more "
                                           r"than the target's 32"):
        engine.add_request(Request(prompt_ids=[1] * 20, max_new_tokens=14))
    with pytest.raises(RequestError, match="max_new_tokens"):
        engine.add_request(Request(prompt_ids=[1], max_new_tokens=10**9, params=SamplingParams(temperature=1.0)))


def test_the_uniform_stream_is_made_on_demand():
    stream = UniformStream(seed=3)
    assert len(stream.draw) == 0
    window = stream.window(100, 5)
    assert len(stream.draw) == 2 * UniformStream.BLOCK  # only what index 104 needs
    again = UniformStream(seed=3)
    pieces = [again.window(i, 1)[0] for i in range(105)]  # other access patterns, the same values
    torch.testing.assert_close(torch.cat(pieces[100:]), window[0], rtol=0, atol=0)
    assert not torch.equal(stream.draw, stream.accept)


# -- drafters that break the contract ------------------------------------------------------------------
class Broken(StatelessDrafter):
    """A drafter whose proposal for the asked `counts` is `make(counts)`, whatever the contract says."""

    name = "broken"

    def __init__(self, make) -> None:
        self.make = make

    def propose(self, rows, seqs, counts):
        return self.make(counts)


NAN, HALF = torch.full((64,), float("nan")), torch.full((64,), 0.5)
FAULTS = {  # kind -> (proposal for `counts`, the fault it must be counted as)
    "length": (lambda counts: Proposal([[7] * (c + 3) for c in counts]), "length"),
    "id": (lambda counts: Proposal([[7, 64, 3][:c] for c in counts]), "id"),
    "negative-id": (lambda counts: Proposal([[-2] * c for c in counts]), "id"),
    "nan-probs": (lambda counts: Proposal([[7] * c for c in counts], [[NAN] * c for c in counts]), "probs"),
    "unnormalised": (lambda counts: Proposal([[7] * c for c in counts], [[HALF] * c for c in counts]), "probs"),
    "rows": (lambda counts: Proposal([[7]]), "rows"),  # one row, whatever the batch
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("sampled", [False, True])
def test_a_drafter_that_breaks_the_contract_costs_its_draft_never_the_output(target, kind, sampled):
    make, counted_as = FAULTS[kind]
    engine = Engine.assemble(ModelRunner(target, "target"), [Broken(make)], [[4]], StubTokenizer())
    params = SamplingParams(temperature=1.0, seed=5) if sampled else SamplingParams()
    requests = [Request(prompt_ids=PROMPT, max_new_tokens=10, params=params, id=i) for i in range(2)]
    results = engine.generate(requests)
    assert [r.token_ids for r in results] == [alone(target, r) for r in requests]
    faults = engine.report()["drafter_faults"]
    assert faults.get(f"broken:{counted_as}", 0) > 0, faults


# -- admission and the target KV budget ----------------------------------------------------------------
def test_steady_arrivals_do_not_starve_running_requests(target):
    engine = build_engine(target, "mag")
    engine.add_request(Request(prompt_ids=PROMPT, max_new_tokens=20, id=0))
    finished_at = {}
    for step in range(200):
        engine.add_request(Request(prompt_ids=PROMPT, max_new_tokens=1, id=step + 1))  # one arrival every step
        for result in engine.step():
            finished_at[result.id] = step
        if 0 in finished_at:
            break
    # The long request decodes at least every other step: at most 2 * 20 steps, however many arrive.
    assert finished_at.get(0, 999) <= 40, finished_at.get(0)
    waits = [finished_at[i] - (i - 1) for i in finished_at if i]
    assert max(waits) <= 2  # and every arrival is served within two steps


def test_the_target_kv_budget_queues_requests_and_never_overflows(target):
    token_bytes = ModelRunner(target, "probe").cache.token_bytes
    budget = 3 * 41 * token_bytes  # three requests of 40 positions at a time
    engine = Engine.assemble(ModelRunner(target, "target"), [], [[]], StubTokenizer(), kv_budget_bytes=budget)
    requests = [Request(prompt_ids=PROMPT, max_new_tokens=36, id=i) for i in range(7)]  # 5 + 36 - 1 = 40
    for request in requests:
        engine.add_request(request)
    peak_rows, results = 0, []
    while engine.has_work():
        results += engine.step()
        assert engine.target.cache.nbytes <= budget
        peak_rows = max(peak_rows, len(engine.running))
    assert peak_rows == 3
    assert sorted(r.id for r in results) == list(range(7))
    assert all(r.token_ids == alone(target, requests[r.id]) for r in results)
    with pytest.raises(RequestError, match="max_new_tokens: this request alone needs .* target_kv_budget_mb"):
        engine.add_request(Request(prompt_ids=PROMPT, max_new_tokens=200, id=99))
