"""MaG's store of recent requests: drafts across requests, confidence, bounded memory and candidates, and
outputs that never change."""

import random
import tracemalloc

import pytest

from helpers import StubTokenizer, hf_greedy, tiny_llama
from tgi_csd.config import parse_config
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.suffix_store import MAX_NEXT, SuffixStore
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError
from tgi_csd.runner import ModelRunner


def test_a_later_request_drafts_what_followed_in_an_earlier_one():
    store = SuffixStore(memory_mb=1)
    store.add([5, 6, 7, 8, 9, 10, 11])
    assert store.lookup([1, 2, 6, 7], 3) == [8, 9, 10]  # longest known suffix (6, 7)
    assert store.lookup([1, 2, 3], 3) == []  # unknown context: no draft
    assert store.stats.hits == 1 and store.stats.lookups == 2


def test_confidence_decides_whether_and_how_much_to_draft():
    store = SuffixStore(memory_mb=1, min_confidence=0.6, half_life=10**9)
    store.add([1, 2, 3, 4, 5, 6])
    store.add([1, 2, 9, 9, 9, 9])
    assert store.lookup([1, 2], 4) == []  # 3 and 9 each half of the counts: below 0.6, no draft
    store.add([7, 1, 2, 3, 4, 5, 6, 0])
    assert store.lookup([1, 2], 6) == [3, 4, 5, 6]  # 3 has 2/3 of the counts: round(6 * 2/3) = 4 tokens
    recent = SuffixStore(memory_mb=1, min_confidence=0.6, half_life=1)
    for tokens in ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 8, 8]):
        recent.add(tokens)
    assert recent.lookup([1, 2], 2) == []  # recency: the latest 8 weighs as much as two older 3s


def test_memory_never_exceeds_the_budget_and_the_charge_covers_what_python_holds():
    rng = random.Random(0)
    budget_mb = 0.25
    store = SuffixStore(memory_mb=budget_mb)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(300):
        store.add([rng.randrange(500) for _ in range(rng.randrange(20, 80))])
        assert store.charged_bytes <= store.budget_bytes
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert store.stats.evicted > 0 and store.stats.sequences > 0
    assert held <= store.budget_bytes * 1.1, (held, store.charged_bytes)  # within the budget (10% for the test)
    assert store.stats.entries == sum(len(nexts) for nexts in store.index.values())
    assert store.stats.tokens == sum(map(len, store.sequences.values()))


def test_a_contexts_candidates_stay_bounded():
    store = SuffixStore(memory_mb=4)
    for following in range(3 * MAX_NEXT):
        store.add([1, 2, following + 10, following + 10])
    assert len(store.index[(1, 2)]) == MAX_NEXT


@pytest.mark.parametrize("eviction, survivor", [("fifo", [3, 3, 3, 4]), ("lru", [1, 1, 1, 2])])
def test_eviction_policies(eviction, survivor):
    sequences = [[1, 1, 1, 2], [2, 2, 2, 3], [3, 3, 3, 4]]
    one = len(sequences[0]) * (8 + 7 * 400)  # what `add` reserves for a 4-token sequence (default n-grams)
    store = SuffixStore(memory_mb=(2 * one) / 2**20, eviction=eviction)
    store.add(sequences[0])
    store.add(sequences[1])
    assert store.lookup([9, 1, 1], 1) == [1]  # drafts from the oldest: with lru it is now the most recent
    store.add(sequences[2])
    assert survivor in list(store.sequences.values())


def test_outputs_are_unchanged_and_later_requests_draft_from_earlier_ones():
    target = tiny_llama(vocab=64, layers=2, init=0.4)
    mag = MaGDrafter(None, store=SuffixStore(memory_mb=4))
    engine = Engine.assemble(ModelRunner(target, "target"), [mag], [[4]], StubTokenizer())
    prompts = [[3, 9, 4, 1, 7], [12, 5, 5, 30], [40, 2, 8, 8, 8, 1]]
    first = [r.token_ids for r in engine.generate([Request(prompt_ids=p, max_new_tokens=16) for p in prompts])]
    assert first == [hf_greedy(target, p, 16) for p in prompts]
    store_rows = mag.sources["store"]
    again = [r.token_ids for r in engine.generate([Request(prompt_ids=p, max_new_tokens=16) for p in prompts])]
    assert again == first
    assert mag.sources["store"] > store_rows  # the repeats drew on the finished requests
    stats = engine.report()
    assert stats["store"]["mag"]["sequences"] == 6
    assert stats["draft_sources"]["mag:store"] == mag.sources["store"]
    engine.generate([Request(prompt_ids=[9, 9, 8], max_new_tokens=4, speculation="off")])
    assert mag.store.stats.sequences == 6  # a request that chose off is not remembered


def test_store_config():
    base = {"target": {"model": "x"}, "k_matrix": [[4]]}
    config = parse_config({**base, "drafters": [{"type": "mag", "store": {"memory_mb": 8, "eviction": "lru"}}]},
                          "test")
    assert config.drafters[0].store.memory_mb == 8 and config.drafters[0].store.max_ngram == 8
    with pytest.raises(ConfigError, match="min_ngram 9 exceeds max_ngram 8"):
        parse_config({**base, "drafters": [{"type": "mag", "store": {"min_ngram": 9}}]}, "test")
