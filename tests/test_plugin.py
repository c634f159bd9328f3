"""The `tgi_speculation` pluggy project: entry points, selection, the [B, S] contract, batch lifecycle."""

from __future__ import annotations

import random
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest
import torch
import yaml

from helpers import FakeClock
from tgi_csd import clock
from tgi_csd.drafters.base import RowInfo
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.errors import ConfigError
from tgi_csd.plugin.hookspecs import hookimpl
from tgi_csd.plugin.manager import ActiveStrategy, StrategyError, StrategyManager
from tgi_csd.plugin.strategies.ngram import ngram_proposal
from tgi_csd.sampling import SamplingParams
from tgi_csd.tgi.seam import TGISeam
from tgi_csd.tokens import TokenSeq


class FixedStrategy:
    """A third party's strategy: proposes whatever `rows` says, records every lifecycle call."""

    def __init__(self, rows=None):
        self.rows = rows
        self.calls = []

    @hookimpl
    def tgi_speculation_add(self, request_ids, histories):
        self.calls.append(("add", list(request_ids)))

    @hookimpl
    def tgi_speculation_propose(self, request_ids, speculate):
        return self.rows if self.rows is not None else [[7] * speculate for _ in request_ids]

    @hookimpl
    def tgi_speculation_filter(self, batch_id, request_ids, removed):
        self.calls.append(("filter", batch_id, list(request_ids), list(removed)))

    @hookimpl
    def tgi_speculation_concatenate(self, batch_ids, batch_id, request_ids):
        self.calls.append(("concatenate", list(batch_ids), batch_id, list(request_ids)))

    @hookimpl
    def tgi_speculation_clear_cache(self, batch_id, request_ids):
        self.calls.append(("clear", batch_id, sorted(request_ids)))


class ThirdPartyModule:
    """Stands for a module registered under the entry-point group."""

    def __init__(self):
        self.created = []

    @hookimpl
    def tgi_speculation_create(self, speculate, config):
        strategy = FixedStrategy()
        self.created.append((speculate, config, strategy))
        return strategy


def manager_with(**plugins) -> StrategyManager:
    manager = StrategyManager(load_entry_points=False)
    for name, plugin in plugins.items():
        manager.register(plugin, name)
    return manager


# -- loading and selection ---------------------------------------------------------------------------
def test_builtin_strategies_load_through_entry_points():
    declared = {ep.name: ep.value for ep in entry_points(group="tgi_speculation")}
    assert declared["csd"] == "tgi_csd.plugin.strategies.csd"
    assert declared["ngram"] == "tgi_csd.plugin.strategies.ngram"
    manager = StrategyManager()
    assert {"csd", "ngram"} <= set(manager.installed())
    # The built-ins are plain modules, loaded the way a third party's would be.
    assert manager.pm.get_plugin("ngram").__name__ == "tgi_csd.plugin.strategies.ngram"


def test_unknown_strategy_names_the_installed_ones():
    with pytest.raises(ConfigError) as error:
        StrategyManager().create("medusa2", speculate=3)
    message = str(error.value)
    assert "unknown strategy 'medusa2'" in message
    assert "installed: csd, ngram" in message


def test_strategy_needs_speculate():
    with pytest.raises(ConfigError, match="needs --speculate N"):
        StrategyManager().create("ngram", speculate=0)


def test_only_the_selected_strategy_is_created():
    first, second = ThirdPartyModule(), ThirdPartyModule()
    manager = manager_with(first=first, second=second)
    assert manager.installed() == ["first", "second"]
    active = manager.create("second", speculate=3, config="x.yaml")
    assert first.created == []
    assert [(s, c) for s, c, _ in second.created] == [(3, "x.yaml")]
    assert active.strategy is second.created[0][2]


# -- the [B, S] contract -----------------------------------------------------------------------------
def active_with(rows, speculate=4, vocab_size=None):
    module = ThirdPartyModule()
    active = manager_with(third=module).create("third", speculate=speculate, vocab_size=vocab_size)
    active.strategy.rows = rows
    return active


def test_short_proposals_are_padded_to_exactly_S():
    active = active_with([[5, 6], [], [9, 9, 9, 9]])
    out = active.propose(1, [10, 11, 12], [[1, 2], [3, 4, 8], [5]], [1, 1, 1])
    assert out.dtype == torch.int64
    assert out.tolist() == [[5, 6, 6, 6], [8, 8, 8, 8], [9, 9, 9, 9]]


def test_tensor_proposals_are_padded_too():
    active = active_with(torch.tensor([[1, 2], [3, 4]]))
    assert active.propose(1, [1, 2], [[0], [0]], [1, 1]).tolist() == [[1, 2, 2, 2], [3, 4, 4, 4]]
    active = active_with(torch.tensor([[1, 2, 3, 4]]))
    assert active.propose(1, [1], [[0]], [1]).shape == (1, 4)


def test_no_draft_for_any_row_means_no_speculative_ids():
    assert active_with([[], []]).propose(1, [1, 2], [[0], [0]], [1, 1]) is None
    assert active_with(torch.zeros(2, 0, dtype=torch.long)).propose(1, [1, 2], [[0], [0]], [1, 1]) is None


def test_more_than_S_is_refused():
    active = active_with([[1, 2, 3, 4, 5]])
    with pytest.raises(StrategyError, match="more than speculate=4"):
        active.propose(1, [1], [[0]], [1])
    active = active_with(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(StrategyError, match="5 ids for request 1, more than speculate=4"):
        active.propose(1, [1], [[0]], [1])
    active = active_with([[1]])
    with pytest.raises(StrategyError, match="1 rows for a batch of 2"):
        active.propose(1, [1, 2], [[0], [0]], [1, 1])


@pytest.mark.parametrize("rows", [[[3, 100]], torch.tensor([[3, 100]]), [[-1]], torch.tensor([[-1, 2]])],
                         ids=["list-too-big", "tensor-too-big", "list-negative", "tensor-negative"])
def test_ids_outside_the_vocabulary_are_refused_before_the_device(rows):
    active = active_with(rows, vocab_size=100)
    with pytest.raises(StrategyError, match=r"outside the vocabulary \[0, 100\)"):
        active.propose(1, [1], [[0]], [1])


def test_non_integer_ids_are_refused():
    with pytest.raises(StrategyError, match="non-integer id for request 1"):
        active_with([[1.5]], vocab_size=100).propose(1, [1], [[0]], [1])
    assert active_with([[numpy.int64(7)]], vocab_size=100).propose(1, [1], [[0]], [1]).tolist() == [[7] * 4]


def test_faults_are_counted_and_reach_the_strategy():
    class Counting:
        def __init__(self):
            self.faults = []

        @hookimpl
        def tgi_speculation_fault(self, hook, error):
            self.faults.append((hook, str(error)))

    class Broken:
        @hookimpl
        def tgi_speculation_fault(self, hook):
            raise RuntimeError("the strategy's own counting failed")

    counting = Counting()
    active = ActiveStrategy("x", counting, 4)
    active.fault("propose", RuntimeError("boom"))
    active.fault("propose", StrategyError("bad ids"))
    active.fault("filter", KeyError(3))
    assert active.stats()["faults"] == {"propose": 2, "filter": 1}
    assert counting.faults == [("propose", "boom"), ("propose", "bad ids"), ("filter", "3")]
    broken = ActiveStrategy("y", Broken(), 4)
    broken.fault("propose", RuntimeError("boom"))  # a fault while counting a fault is swallowed
    assert broken.faults == {"propose": 1}


# -- lifecycle bookkeeping -----------------------------------------------------------------------------
def test_lifecycle_names_the_requests_that_left():
    active = active_with(None, speculate=2)
    calls = active.strategy.calls
    active.add(1, [10, 11, 12], [[1], [2], [3]])
    active.add(2, [20], [[4]])
    assert active.filter(1, [12, 10]) == [11]
    active.concatenate([1, 2], 1, [12, 10, 20])
    assert active.batches == {1: [12, 10, 20]}
    assert active.clear_cache(1) == [12, 10, 20]
    active.add(3, [30], [[5]])
    assert active.clear_cache(None) == [30]
    assert calls == [
        ("add", [10, 11, 12]), ("add", [20]), ("filter", 1, [12, 10], [11]), ("concatenate", [1, 2], 1, [12, 10, 20]),
        ("clear", 1, [10, 12, 20]), ("add", [30]), ("clear", None, [30]),
    ]
    assert active.live_requests == []


def test_stale_ids_are_released_before_reuse():
    """Warmup batches are never filtered; a real request reusing an id must not inherit their state."""
    active = active_with(None, speculate=2)
    active.add(99, [0, 1], [[1], [2]])
    active.add(5, [0], [[3]])
    assert active.strategy.calls[1:] == [("clear", 99, [0]), ("add", [0])]
    assert active.batches == {99: [1], 5: [0]}


def test_unannounced_requests_are_added_on_propose():
    active = active_with(None, speculate=2)
    active.propose(4, [8], [[1, 2]], [1])
    assert active.strategy.calls == [("add", [8])]
    assert active.batches == {4: [8]}


# -- the ngram strategy ----------------------------------------------------------------------------
def test_ngram_strategy_is_tgis_first_match_proposal():
    """Row by row it equals the engine's TGI n-gram drafter (a mirror of TGI at batch size 1)."""
    rng = random.Random(0)
    for _ in range(300):
        history = [rng.randrange(6) for _ in range(rng.randrange(2, 30))]
        accepted = rng.randrange(1, min(len(history) - 1, 5) + 1)
        drafter = TGINGramDrafter()
        drafter.add_rows([RowInfo(history[: len(history) - accepted], SamplingParams())])
        drafter.commit([history])  # the step that accepted `accepted` tokens
        expected = drafter.propose([0], [TokenSeq(history)], [4]).tokens[0]
        assert ngram_proposal(history, accepted, 4) == expected


def test_ngram_examples():
    # seed 3 first occurs at index 2 of the searched history [1, 2, 3, 4, 5]: copy 4, 5, then clamp to 5.
    assert ngram_proposal([1, 2, 3, 4, 5, 3], 1, 3) == [4, 5, 5]
    # two tokens accepted: search only [1, 2, 3, 4]; seed 9 absent -> tokens 1.. of the prompt
    assert ngram_proposal([1, 2, 3, 4, 7, 9], 2, 3) == [2, 3, 4]


def test_ngram_through_the_manager():
    active = StrategyManager().create("ngram", speculate=3)
    out = active.propose(1, [1, 2], [[1, 2, 3, 4, 5, 3], [1, 2, 3, 4, 7, 9]], [1, 2])
    assert out.tolist() == [[4, 5, 5], [2, 3, 4]]


# -- the csd strategy ------------------------------------------------------------------------------
def write_config(folder, drafters, k_matrix):
    path = folder / "cascade.yaml"
    path.write_text(yaml.safe_dump({"target": {"model": str(folder)}, "drafters": drafters, "k_matrix": k_matrix}))
    return str(path)


@pytest.fixture
def tiny_model_dir(tmp_path):
    from helpers import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path / "tiny")


def csd(config, speculate, model_dir=None):
    from helpers import StubTokenizer

    return StrategyManager().create("csd", speculate=speculate, tokenizer=StubTokenizer(), config=config,
                                    model_id=str(model_dir) if model_dir else None, vocab_size=64)


def random_histories(seed, count, vocab=12):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randrange(5, 25))] for _ in range(count)]


def grow(history, seed):
    rng = random.Random(seed)
    return history + [rng.randrange(12) for _ in range(rng.randrange(1, 4))]


@pytest.mark.parametrize("layout", ["mag", "model+mag"])
def test_csd_state_follows_requests_through_filter_concatenate_clear(tmp_path, tiny_model_dir, layout):
    """After any sequence of batch events, each request's draft equals a fresh strategy's draft for
    that request alone: no drafter row ever serves another request."""
    if layout == "mag":
        config = write_config(tmp_path, [{"type": "mag", "bigram": None}], [[4]])
    else:
        config = write_config(tmp_path, [{"type": "model", "name": "cut", "from_target_layers": 2},
                                         {"type": "mag", "bigram": None}], [[2, 2], [0, 1]])
    active = csd(config, 4, tiny_model_dir)

    def fresh(history):
        solo = csd(config, 4, tiny_model_dir)
        solo.add(0, [1], [history[:-1]])
        out = solo.propose(0, [1], [history], [1])  # None: no draft (a batch pads it with the last token)
        return [history[-1]] * 4 if out is None else out.tolist()[0]

    hist = dict(zip([10, 11, 12], random_histories(1, 3)))
    active.add(1, list(hist), list(hist.values()))
    other = dict(zip([20, 21], random_histories(2, 2)))
    active.add(2, list(other), list(other.values()))
    out = active.propose(1, list(hist), list(hist.values()), [1, 1, 1])
    assert out.shape == (3, 4)
    # request 11 ends; 12 and 10 remain, reordered
    active.filter(1, [12, 10])
    hist = {r: grow(hist[r], r) for r in (12, 10)}
    out = active.propose(1, list(hist), list(hist.values()), [2, 2])
    assert out.tolist() == [fresh(hist[12]), fresh(hist[10])]
    # batch 2 joins batch 1
    active.propose(2, list(other), list(other.values()), [1, 1])
    active.concatenate([1, 2], 1, [12, 10, 20, 21])
    merged = {**hist, **{r: grow(h, r) for r, h in other.items()}}
    out = active.propose(1, list(merged), list(merged.values()), [1, 1, 1, 1])
    assert out.tolist() == [fresh(merged[r]) for r in merged]
    assert sorted(active.strategy.session.ids) == [10, 12, 20, 21]
    active.clear_cache(1)
    assert active.strategy.session.ids == [] and active.strategy.session.histories == []
    for drafter in active.strategy.session.drafters:
        if hasattr(drafter, "runner"):
            assert drafter.runner.cached == []
        if hasattr(drafter, "indexes"):
            assert drafter.indexes == []


def test_csd_drafters_take_the_shards_device_and_dtype_unless_the_config_sets_them(tmp_path, tiny_model_dir):
    """Inside TGI a cut drafter runs on the shard's device in its dtype (here CPU, bfloat16), takes joining
    prompts in chunks; a `target.dtype` in the config overrides the shard's; the memory it holds is reported."""
    from helpers import StubTokenizer

    drafters = [{"type": "model", "name": "cut", "from_target_layers": 2}, {"type": "mag", "bigram": None}]
    config = write_config(tmp_path, drafters, [[2, 2], [0, 1]])

    def cut_runner(config_path):
        active = StrategyManager().create("csd", speculate=4, tokenizer=StubTokenizer(), config=config_path,
                                          model_id=str(tiny_model_dir), vocab_size=64, device=torch.device("cpu"),
                                          dtype=torch.bfloat16)
        return active, active.strategy.session.model_drafters[0].runner

    active, runner = cut_runner(config)
    assert runner.model.dtype == torch.bfloat16 and runner.model.device.type == "cpu"
    assert len(runner.model.model.layers) == 2
    from tgi_csd.plugin.strategies.csd import DEFAULT_PREFILL_CHUNK

    assert active.strategy.session.model_drafters[0].prefill_chunk == DEFAULT_PREFILL_CHUNK  # bounded joins
    history = [5, 6, 7, 5, 6]
    active.add(0, [1], [history])
    active.propose(0, [1], [history], [1])
    stats = active.strategy.session.refresh_stats()
    assert stats.drafter_weight_bytes["cut"] == runner.weight_bytes > 0 and stats.drafter_kv_bytes["cut"] > 0
    explicit = tmp_path / "explicit.yaml"
    data = yaml.safe_load(Path(config).read_text())
    data["target"]["dtype"] = "float32"
    explicit.write_text(yaml.safe_dump(data))
    assert cut_runner(str(explicit))[1].model.dtype == torch.float32


def test_csd_refuses_a_shard_dtype_drafters_cannot_take(tmp_path):
    config = write_config(tmp_path, [{"type": "mag", "bigram": None}], [[4]])
    from helpers import StubTokenizer

    with pytest.raises(ConfigError, match="shard's dtype float8_e4m3fn.*set target.dtype"):
        StrategyManager().create("csd", speculate=4, tokenizer=StubTokenizer(), config=config, vocab_size=64,
                                 dtype=torch.float8_e4m3fn)


def test_default_drafter_kv_budget_is_for_accelerators_only():
    from tgi_csd.plugin.strategies.csd import default_kv_budget_mb

    assert default_kv_budget_mb("cpu") is None


def test_csd_default_config_is_mag_with_k_equal_S(tmp_path):
    from helpers import StubTokenizer
    from tgi_csd.plugin.strategies.csd import default_config

    config = default_config(5)
    assert [d.type for d in config.drafters] == ["mag"] and config.k_matrix == [[5]]
    # (built without a config file only with a real tokenizer: the default bigram table needs one)
    no_bigram = write_config(tmp_path, [{"type": "mag", "bigram": None}], [[5]])
    active = StrategyManager().create("csd", speculate=5, tokenizer=StubTokenizer(), config=no_bigram, vocab_size=64)
    history = [1, 2, 3, 4, 1, 2]
    active.add(0, [1], [history])
    assert active.propose(0, [1], [history], [1]).tolist() == [[3, 4, 1, 2, 3]]


def test_csd_reports_acceptance(tmp_path):
    config = write_config(tmp_path, [{"type": "mag", "bigram": None}], [[3]])
    active = csd(config, 3)
    history = [1, 2, 3, 4, 1, 2]
    active.add(0, [1], [history])
    assert active.propose(0, [1], [history], [1]).tolist() == [[3, 4, 1]]
    history = [*history, 3, 4, 5]  # the target accepted 3, 4, then chose 5 (accepted = 3)
    active.propose(0, [1], [history], [3])
    stats = active.stats()
    assert stats["strategy"] == "csd" and stats["draft_tokens_accepted"] == 2
    assert stats["drafts"]["mag->target"]["accepted"] == 2


def test_adaptive_csd_turns_speculation_off_when_the_shard_is_slow_per_token(tmp_path, monkeypatch):
    """A useless draft (never accepted) and a shard whose step time grows with the verified width:
    the strategy stops passing speculative ids, the stats say so, and the metrics endpoint too."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("TGI_CSD_METRICS_PORT", "0")
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump({
        "target": {"model": str(tmp_path)}, "drafters": [{"type": "tgi-ngram"}], "k_matrix": [[4]],
        "adaptive": {"warmup_steps": 1, "hold_steps": 2, "probe_every": 50}}))
    active = csd(str(path), 4)
    history = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]  # the n-gram rule proposes 3, 1, 2, ... every step
    active.add(0, [1], [history])
    outputs = []
    fake = FakeClock()
    with clock.use(fake):
        for _ in range(30):
            out = active.propose(0, [1], [history], [1])
            outputs.append(out)
            fake.advance(0.001 * (1 + (4 if out is not None else 0)) * 5)  # the shard's verify step
            history = [*history, history[-3]]  # the cycle goes on, but `accepted` = 1: nothing was taken
    assert outputs[0] is not None and outputs[-1] is None, [o is None for o in outputs]
    stats = active.strategy.stats
    assert stats.speculation_off_steps >= 20 and stats.current_k["target"] == {"ngram": 0}
    port = active.strategy.metrics.port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["tgi_csd_speculation_off_steps_total"] == stats.speculation_off_steps
    assert samples["tgi_csd_steps_total"] == 30
    active.strategy.metrics.close()


def test_csd_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: {model: x}\ndrafters: [{type: mag}]\nk_matrix: [[1, 2]]\n")
    with pytest.raises(ConfigError, match="k_matrix: row 0 has 2 entries"):
        csd(str(bad), 3)


# -- the TGI glue, on a stand-in batch ---------------------------------------------------------------
def fake_batch(batch_id, rows, lengths):
    width = max(len(r) for r in rows) + 8
    tensor = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        tensor[i, : len(row)] = torch.tensor(row)
    return SimpleNamespace(
        batch_id=batch_id,
        requests=[SimpleNamespace(id=100 + i) for i in range(len(rows))],
        all_input_ids_tensor=tensor,
        cache_lengths_tensor=torch.tensor([n - 1 for n in lengths]),
        input_lengths_tensor=torch.ones(len(rows), dtype=torch.long),
    )


def test_seam_tracks_histories_from_the_batch():
    seam = TGISeam(StrategyManager().create("ngram", speculate=2))
    prompts = [[1, 2, 3, 4], [5, 6, 7]]
    first = [[*prompts[0], 9], [*prompts[1], 5]]
    batch = fake_batch(3, first, [len(p) for p in prompts])
    batch.cache_lengths_tensor = torch.zeros(2, dtype=torch.long)
    batch.input_lengths_tensor = torch.tensor([len(p) for p in prompts])
    one = torch.ones(2, dtype=torch.long)
    out = seam.propose(batch, one, torch.tensor([9, 5]), torch.tensor([0, 1, 2]), prefill=True)
    assert seam.active.history(100) == first[0] and seam.active.history(101) == first[1]
    assert out.tolist() == [ngram_proposal(first[0], 1, 2), ngram_proposal(first[1], 1, 2)]
    # decode: request 100 accepted 2 tokens, request 101 accepted 1
    rows = [[*first[0], 2, 3], [*first[1], 6]]
    batch = fake_batch(3, rows, [len(h) for h in first])
    accepted = torch.tensor([2, 1])
    out = seam.propose(batch, accepted, torch.tensor([2, 3, 6]), torch.tensor([0, 2, 3]), prefill=False)
    assert seam.active.history(100) == rows[0] and seam.active.history(101) == rows[1]
    assert out.tolist() == [ngram_proposal(rows[0], 2, 2), ngram_proposal(rows[1], 1, 2)]
    batch.requests = batch.requests[1:]
    seam.filter(batch)
    assert seam.active.live_requests == [101]
    seam.clear_cache(None)
    assert seam.active.live_requests == []


def test_seam_hands_each_requests_speculation_to_the_strategy_and_reports_it(tmp_path):
    """A request's `speculation` (its proto field; unset reads empty) reaches the csd strategy; the report the
    patched server puts in the request's details counts its drafts and target forwards."""
    config = write_config(tmp_path, [{"type": "mag", "bigram": None}], [[2]])
    data = yaml.safe_load(Path(config).read_text())
    Path(config).write_text(yaml.safe_dump({**data, "profiles": {"long": [4]}}))
    seam = TGISeam(csd(config, 4))
    assert seam.profiles() == ["auto", "off", "long"]
    prompts = [[1, 2, 3, 1, 2, 3], [5, 6, 5, 6], [7, 8, 7, 8]]
    first = [[*p, p[len(p) % 3 - 3]] for p in prompts]
    batch = fake_batch(3, first, [len(p) for p in prompts])
    for request, choice in zip(batch.requests, ["off", "", "long"]):
        request.speculation = choice
    batch.cache_lengths_tensor = torch.zeros(3, dtype=torch.long)
    batch.input_lengths_tensor = torch.tensor([len(p) for p in prompts])
    out = seam.propose(batch, torch.ones(3, dtype=torch.long), torch.tensor([h[-1] for h in first]),
                       torch.tensor([0, 1, 2, 3]), prefill=True)
    off, auto, long = (seam.report(100 + i) for i in range(3))
    assert (off["profile"], auto["profile"], long["profile"]) == ("off", "auto", "long")
    assert all(r["target_forwards"] == 1 for r in (off, auto, long))
    assert out[0].tolist() == [first[0][-1]] * 4  # off: no draft, the host pads its row
    batch = fake_batch(3, [[*h, 0] for h in first], [len(h) for h in first])
    seam.propose(batch, torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                 torch.tensor([0, 1, 2, 3]), prefill=False)
    off, long = seam.report(100), seam.report(102)
    assert off["drafters"] == {} and off["target_forwards"] == 2
    assert long["drafters"]["mag"]["proposed"] > 0 and long["target_forwards"] == 2


def test_a_batch_with_repeated_ids_is_not_speculated_on():
    """TGI's warmup batch gives every request id 0: the strategy never sees it, the step decodes plainly."""
    active = active_with(None, speculate=2)
    active.add(0, [0, 0, 0], [[1], [2], [3]])
    assert active.propose(0, [0, 0, 0], [[1, 5], [2, 5], [3, 5]], [1, 1, 1]) is None
    assert active.strategy.calls == [] and active.live_requests == []
