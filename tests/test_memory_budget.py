"""Drafter KV budget: buffers never exceed it, dropped rows are rebuilt exactly, outputs never change."""

import random

import pytest
import torch

from helpers import StubTokenizer, build_engine, tiny_llama
from tgi_csd.builder import DrafterAssets, build_session, share_kv_budget
from tgi_csd.config import parse_config
from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError
from tgi_csd.kv_cache import BudgetedKVCache, RaggedKVCache
from tgi_csd.models import cut_from_target
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq

CONFIG = {
    "target": {"model": "unused"},
    "drafters": [
        {"type": "model", "name": "big", "from_target_layers": 3},
        {"type": "model", "name": "small", "from_target_layers": 1},
        {"type": "mag", "bigram": None},
    ],
    "k_matrix": [[2, 1, 2], [0, 2, 1], [0, 0, 3]],
}
LONG = 600  # a prompt that alone needs more positions than the budget holds


def budgeted_csd(target, budget_mb: float) -> Engine:
    """The 'csd' layout of `helpers.build_engine`, its model drafters sharing `budget_mb`."""
    config = parse_config({**CONFIG, "drafter_kv_budget_mb": budget_mb})
    return config_engine(target, config)


def config_engine(target, config) -> Engine:
    """`config`'s engine over `target`, built as `Engine.from_config` builds one."""
    assets = DrafterAssets.load(config.drafters, target, StubTokenizer(), "float32", 64)
    runner = ModelRunner(target, "target")
    return Engine(runner, build_session(config, assets, 64, target_cost=runner.cost), StubTokenizer())


def checked_forwards(runner: ModelRunner, peaks: list[int]) -> None:
    """After every forward of `runner`, record its buffers' bytes and check them against the budget;
    check each new buffer against the budget too, counted beside all live ones (a resize's peak)."""
    forward, empty, cache = runner.forward, runner.cache._empty, runner.cache

    def allocating(batch: int, capacity: int) -> torch.Tensor:
        buffer = empty(batch, capacity)
        assert cache.nbytes + buffer.numel() * buffer.element_size() <= cache.budget_bytes
        return buffer

    def wrapped(*args, **kwargs):
        out = forward(*args, **kwargs)
        peaks.append(cache.nbytes)
        assert cache.nbytes <= cache.budget_bytes
        return out

    runner.forward = wrapped
    cache._empty = allocating


def test_budget_holds_for_64_sequences_and_outputs_are_unchanged(target):
    rng = random.Random(0)
    prompts = [[rng.randrange(64) for _ in range(rng.randrange(1, 40))] for _ in range(63)]
    prompts.append([rng.randrange(64) for _ in range(LONG)])
    requests = [Request(prompt_ids=p, max_new_tokens=rng.randrange(24, 65), id=i) for i, p in enumerate(prompts)]
    engine = budgeted_csd(target, 0.25)
    models = [d for d in engine.drafters if isinstance(d, ModelDrafter)]
    caches = [d.runner.cache for d in models]
    assert all(isinstance(c, BudgetedKVCache) for c in caches)
    assert sum(c.budget_bytes for c in caches) <= 0.25 * 2**20
    # Far below the need: the KV of every sequence at its full length takes over 4x the budget.
    tokens = sum(len(r.prompt_ids) + r.max_new_tokens for r in requests)
    assert all(tokens * c.token_bytes > 4 * c.budget_bytes for c in caches)
    assert caches[0].positions == caches[1].positions
    assert 300 < caches[0].positions < LONG
    peaks: dict[str, list[int]] = {d.name: [] for d in models}
    for d in models:
        checked_forwards(d.runner, peaks[d.name])

    for request in requests:
        engine.add_request(request)
    done, resident_ids, most_resident = {}, {d.name: set() for d in models}, 0
    while engine.has_work():
        for result in engine.step():
            done[result.id] = result
        for d in models:
            assert d.runner.cache.nbytes <= d.runner.cache.budget_bytes
            rows = [r for r, slot in enumerate(d.runner.cache.slot) if slot >= 0]
            resident_ids[d.name].update(engine.running[r].request.id for r in rows)
            most_resident = max(most_resident, len(rows))

    alone = build_engine(target, "none").generate(requests)
    for request, reference in zip(requests, alone):
        assert done[request.id].token_ids == reference.token_ids, f"sequence {request.id} changed"
    report = engine.report()
    assert report["generated_tokens"] == sum(r.max_new_tokens for r in requests)
    for d in models:
        cache = d.runner.cache
        assert max(peaks[d.name]) > 0.8 * cache.positions * cache.token_bytes, "the budget never binds: untested"
        assert engine.stats.pairs[("target" if d.name == "big" else "big", d.name)].proposed > 0
        # Residency rotates: far more sequences were served than fit at once; the long one never fits.
        assert len(resident_ids[d.name]) >= max(24, 2 * most_resident + 1)
        assert 63 not in resident_ids[d.name]
    assert engine.stats.pairs[("target", "big")].accepted > 0  # with 64 rows, tokens per forward cannot tell


def test_dropped_row_is_rebuilt_and_drafts_its_greedy_continuation(target):
    model = cut_from_target(target, 2)
    drafter = ModelDrafter("d", ModelRunner(model, "d"))
    drafter.runner.limit_kv(40 * BudgetedKVCache.position_bytes(drafter.runner.cache))
    cache = drafter.runner.cache
    assert cache.positions == 40
    histories = [[5, 9, 2, 7, 1, 3, 8, 8, 4, 6], [11, 3, 14, 15, 9, 2, 6, 5, 3, 5, 8, 9]]
    drafter.add_rows([RowInfo(list(h), SamplingParams()) for h in histories])
    rebuilt_drafts, was_dropped, served = 0, [False, False], [0, 0]
    for _ in range(16):
        resident_before = [slot >= 0 for slot in cache.slot]
        proposal = drafter.propose([0, 1], [TokenSeq(h) for h in histories], [3, 3])
        assert cache.nbytes <= cache.budget_bytes
        for row, (history, tokens) in enumerate(zip(histories, proposal.tokens)):
            if not tokens:
                was_dropped[row] |= resident_before[row] or served[row] > 0
                continue
            with torch.inference_mode():
                expected = model.generate(torch.tensor([history]), max_new_tokens=3, min_new_tokens=3,
                                          do_sample=False, pad_token_id=0)[0, len(history):].tolist()
            assert tokens == expected, f"row {row} drafted wrongly (after a rebuild: {was_dropped[row]})"
            served[row] += 1
            rebuilt_drafts += was_dropped[row]
            # The target accepts two of them and picks a token of its own.
            history.extend([*tokens[:2], (tokens[2] + 1) % 64])
        drafter.commit(histories)
    assert all(served), "rotation: both rows must be served"
    assert rebuilt_drafts > 0, "no row was dropped and rebuilt: eviction is untested"


def test_a_row_larger_than_the_budget_gets_no_draft_and_no_memory(target):
    drafter = ModelDrafter("d", ModelRunner(cut_from_target(target, 1), "d"))
    drafter.runner.limit_kv(20 * BudgetedKVCache.position_bytes(drafter.runner.cache))
    assert drafter.runner.cache.positions == 20
    drafter.add_rows([RowInfo(list(range(30)), SamplingParams())])
    proposal = drafter.propose([0], [TokenSeq(list(range(30)))], [2])
    assert proposal.tokens == [[]]
    assert drafter.runner.cache.nbytes == 0 and drafter.runner.forwards == 0


@pytest.mark.parametrize("budget", [0, -1.5])
def test_non_positive_budget_is_one_error_naming_the_field(budget):
    with pytest.raises(ConfigError) as error:
        parse_config({**CONFIG, "drafter_kv_budget_mb": budget})
    message = str(error.value)
    assert "drafter_kv_budget_mb" in message and "greater than 0" in message
    assert ";" not in message


def test_no_budget_keeps_the_unbounded_cache(target):
    config = parse_config(CONFIG)
    assert config.drafter_kv_budget_mb is None
    caches = [d.runner.cache for d in config_engine(target, config).drafters if isinstance(d, ModelDrafter)]
    assert [type(c) for c in caches] == [RaggedKVCache, RaggedKVCache]
    assert caches[0].reserve([0, 1], [10**6, 10**6]) == [True, True]


def test_budget_split_gives_equal_positions():
    runners = [ModelRunner(tiny_llama(layers=n), f"d{n}") for n in (4, 2, 1)]
    share_kv_budget(runners, 1.0)
    caches = [r.cache for r in runners]
    assert sum(c.budget_bytes for c in caches) <= 2**20
    positions = [c.positions for c in caches]
    assert max(positions) - min(positions) <= 1 and positions[0] > 0
    # A position costs 2 KV buffers per layer + 1 of headroom: budgets 9:5:3 for 4, 2 and 1 layers.
    assert [round(c.budget_bytes * 17 / 2**20, 3) for c in caches] == [9, 5, 3]


def test_tiny_model_bytes_per_token_match_the_buffers():
    runner = ModelRunner(tiny_llama(layers=3), "t")
    runner.add_rows(2)
    runner.forward([0, 1], [TokenSeq([1, 2, 3]), TokenSeq([4])], [1, 1])
    cache = runner.cache
    assert cache.nbytes == cache.token_bytes * cache.batch_size * cache.capacity
