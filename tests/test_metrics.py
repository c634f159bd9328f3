"""Prometheus metrics served from real tiny engines, scraped over HTTP; the periodic log line."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import StubTokenizer, build_engine
from tgi_csd.engine import Request
from tgi_csd.errors import ConfigError
from tgi_csd.metrics import SummaryLog, engine_stats, serve, serve_from_env

PROMPTS = [
    [1, 2, 3, 4, 5, 1, 2, 3],
    [7, 8, 9],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
    [40, 41, 42, 40, 41],
    [9, 8, 7, 6, 5, 4, 3, 2, 1],
]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def by_label(samples: dict, name: str, key: str, **fixed: str) -> dict[str, float]:
    """{label `key`: value} of the samples of `name` whose other labels equal `fixed`."""
    out = {}
    for (sample, labels), v in samples.items():
        labels = dict(labels)
        if sample == name and all(labels.get(k) == x for k, x in fixed.items()):
            out[labels[key]] = v
    return out


@pytest.fixture
def served():
    """serve() with cleanup: call it as served(stats) -> MetricsServer on 127.0.0.1, any free port."""
    servers = []

    def start(stats):
        server = serve(stats, 0, "127.0.0.1")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def requests(n_tokens: int) -> list[Request]:
    return [Request(prompt_ids=p, max_new_tokens=n_tokens) for p in PROMPTS]


def test_counters_equal_the_engine_report(target, served):
    engine = build_engine(target, "mag")
    engine.generate(requests(16))
    server = served(engine_stats(engine))
    assert server.port > 0
    samples = scrape(server.port)
    report = engine.report()

    pair = report["drafts"]["mag->target"]
    assert pair["accepted"] > 0, "nothing accepted: the acceptance counters are untested"
    assert value(samples, "tgi_csd_spec_decode_num_draft_tokens_total", reviewer="target", drafter="mag") \
        == pair["proposed"]
    assert value(samples, "tgi_csd_spec_decode_num_accepted_tokens_total", reviewer="target", drafter="mag") \
        == pair["accepted"]
    assert value(samples, "tgi_csd_acceptance_rate", reviewer="target", drafter="mag") \
        == pytest.approx(pair["accepted"] / pair["proposed"])
    assert value(samples, "tgi_csd_spec_decode_num_drafts_total", reviewer="target") == engine.stats.drafts["target"]
    for name, key in [("steps", "steps"), ("generated_tokens", "generated_tokens"),
                      ("target_forwards", "target_forwards"), ("speculation_off_steps", "speculation_off_steps")]:
        assert value(samples, f"tgi_csd_{name}_total") == report[key], name
    assert report["generated_tokens"] == 16 * len(PROMPTS)
    assert report["target_forwards"] > 0
    for drafter, calls in report["drafter_calls"].items():
        assert value(samples, "tgi_csd_drafter_calls_total", drafter=drafter) == calls["calls"]
        assert value(samples, "tgi_csd_drafter_seconds_total", drafter=drafter) == \
            pytest.approx(calls["seconds"], abs=1e-4)
    assert value(samples, "tgi_csd_current_k", reviewer="target", drafter="mag") == 4
    positions = by_label(samples, "tgi_csd_spec_decode_num_accepted_tokens_per_pos_total", "position",
                         reviewer="target")
    assert positions == {key[len("target["):-1]: float(s["accepted"])
                         for key, s in report["positions"].items() if key.startswith("target[")}


def test_counters_move_by_exactly_the_new_proposals_and_acceptances(target, served):
    engine = build_engine(target, "mag")
    engine.generate(requests(8))
    server = served(engine_stats(engine))
    before = scrape(server.port)

    # Count what the target's cascade reports from here on, independently of EngineStats.
    seen = {"proposed": 0, "accepted": 0, "drafts": 0}
    record = engine.top.record

    def spy(draft, accepted):
        for origins, count in zip(draft.origins, accepted):
            seen["proposed"] += len(origins)
            seen["accepted"] += min(count, len(origins))
            seen["drafts"] += bool(origins)
        record(draft, accepted)

    engine.top.record = spy
    new_tokens, steps = 0, 0
    for request in requests(12):
        engine.add_request(request)
    while engine.has_work():
        new_tokens += sum(len(r.token_ids) for r in engine.step())
        steps += 1
    after = scrape(server.port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert seen["accepted"] > 0 and seen["proposed"] > seen["accepted"]
    pair = {"reviewer": "target", "drafter": "mag"}
    assert moved("tgi_csd_spec_decode_num_draft_tokens_total", **pair) == seen["proposed"]
    assert moved("tgi_csd_spec_decode_num_accepted_tokens_total", **pair) == seen["accepted"]
    assert moved("tgi_csd_spec_decode_num_drafts_total", reviewer="target") == seen["drafts"]
    assert moved("tgi_csd_generated_tokens_total") == new_tokens == 12 * len(PROMPTS)
    assert moved("tgi_csd_steps_total") == steps
    assert moved("tgi_csd_target_forwards_total") == steps  # one target forward per step


def test_per_position_counts_sum_to_the_reviewers_totals(target, served):
    engine = build_engine(target, "csd")  # target and nested reviewers, three drafters
    engine.generate(requests(16))
    samples = scrape(served(engine_stats(engine)).port)
    reviewers = set(by_label(samples, "tgi_csd_spec_decode_num_drafts_total", "reviewer"))
    assert {"target", "big"} <= reviewers
    for reviewer in reviewers:
        for kind in ("draft", "accepted"):
            per_pos = by_label(samples, f"tgi_csd_spec_decode_num_{kind}_tokens_per_pos_total", "position",
                               reviewer=reviewer)
            per_drafter = by_label(samples, f"tgi_csd_spec_decode_num_{kind}_tokens_total", "drafter",
                                   reviewer=reviewer)
            assert per_pos and sum(per_pos.values()) == sum(per_drafter.values()), (reviewer, kind)
    accepted_at = by_label(samples, "tgi_csd_spec_decode_num_accepted_tokens_per_pos_total", "position",
                           reviewer="target")
    assert accepted_at["0"] > 0
    # A draft token is accepted only after every earlier one: acceptances never grow with position.
    counts = [accepted_at[str(p)] for p in range(len(accepted_at))]
    assert counts == sorted(counts, reverse=True)


def test_serve_from_env_serves_on_rank_zero_only(target, monkeypatch):
    stats = engine_stats(build_engine(target, "mag"))
    monkeypatch.delenv("TGI_CSD_METRICS_PORT", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert serve_from_env(stats) is None
    monkeypatch.setenv("TGI_CSD_METRICS_PORT", "")
    assert serve_from_env(stats) is None

    monkeypatch.setenv("TGI_CSD_METRICS_PORT", "0")
    monkeypatch.setenv("RANK", "1")
    assert serve_from_env(stats, addr="127.0.0.1") is None
    monkeypatch.setenv("RANK", "0")
    assert serve_from_env(stats, rank=3, addr="127.0.0.1") is None

    server = serve_from_env(stats, addr="127.0.0.1")
    assert server is not None
    try:
        assert value(scrape(server.port), "tgi_csd_steps_total") == 0
        # The port in use: one ConfigError naming the variable.
        monkeypatch.setenv("TGI_CSD_METRICS_PORT", str(server.port))
        with pytest.raises(ConfigError, match="TGI_CSD_METRICS_PORT"):
            serve_from_env(stats, addr="127.0.0.1")
    finally:
        server.close()
    with socket.socket() as probe:  # closed: the port can be listened on again (TIME_WAIT aside)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


@pytest.mark.parametrize("bad", ["abc", "9400.5", "70000", "-1"])
def test_serve_from_env_rejects_a_bad_port(target, monkeypatch, bad):
    monkeypatch.setenv("TGI_CSD_METRICS_PORT", bad)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="TGI_CSD_METRICS_PORT.*unset it"):
        serve_from_env(engine_stats(build_engine(target, "mag")))


def test_summary_log_logs_once_per_interval(target, caplog):
    engine = build_engine(target, "mag")
    now = [100.0]
    logger = logging.getLogger("tgi_csd.test_metrics")
    summary = SummaryLog(engine_stats(engine), every_seconds=30.0, logger=logger, clock=lambda: now[0])
    for request in requests(24):
        engine.add_request(request)
    lines, done = [], 0
    with caplog.at_level(logging.INFO, logger=logger.name):
        for t in [100.0, 110.0, 129.9, 130.0, 131.0, 159.0, 160.5, 161.0]:
            now[0] = t
            done += sum(len(r.token_ids) for r in engine.step())
            produced = done + sum(s.generated for s in engine.running)  # counted apart from EngineStats
            line = summary.tick()
            if line is not None:
                lines.append((t, line, produced))
    assert [t for t, _, _ in lines] == [130.0, 160.5]
    assert [r.getMessage() for r in caplog.records] == [line for _, line, _ in lines]
    (_, first, at_first), (_, second, at_second) = lines
    assert "\n" not in first
    assert first.startswith("tgi-csd: 4 steps, ") and "mag->target" in first and "k target={mag: 4}" in first
    # The first tick (after the prefill step: one token per prompt) sets the baseline; then each line's.
    assert first.endswith(f", +{at_first - len(PROMPTS)} tokens since last")
    assert second.endswith(f", +{at_second - at_first} tokens since last")
    assert at_second > at_first > len(PROMPTS)


def test_scrapes_during_generation_succeed_and_never_decrease(target, served):
    """A thread scrapes while the engine steps (and creates new stats keys) on this one."""
    engine = build_engine(target, "csd")
    server = served(engine_stats(engine))
    scrapes, errors, done = [], [], threading.Event()

    def scraper():
        while not done.is_set():
            try:
                scrapes.append(scrape(server.port))
            except Exception as e:  # reported below: an exception here would not fail the test
                errors.append(e)
                return

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        engine.generate(requests(24))
    finally:
        done.set()
        thread.join()
    assert not errors, errors
    scrapes.append(scrape(server.port))
    assert len(scrapes) >= 3
    for earlier, later in itertools.pairwise(scrapes):
        for key in earlier.keys() & later.keys():
            if key[0].endswith("_total"):
                assert later[key] >= earlier[key], key
    assert value(scrapes[-1], "tgi_csd_generated_tokens_total") == 24 * len(PROMPTS)


def test_faults_are_exported_by_drafter_kind_and_by_hook(served):
    from tgi_csd.stats import EngineStats

    stats = EngineStats()
    stats.drafter_faults["layers4:id"] += 2
    stats.strategy_faults["propose"] += 3
    stats.strategy_faults["filter"] += 1
    samples = scrape(served(lambda: stats).port)
    assert value(samples, "tgi_csd_drafter_faults_total", drafter="layers4", kind="id") == 2
    assert by_label(samples, "tgi_csd_strategy_faults_total", "hook") == {"propose": 3, "filter": 1}


def test_each_model_drafters_memory_is_exported(target, served):
    """Weights (each storage once) and KV now and at its peak, per model drafter."""
    engine = build_engine(target, "csd")
    engine.generate(requests(8))
    samples = scrape(served(engine_stats(engine)).port)
    drafters = engine.session.model_drafters
    assert [d.name for d in drafters] == ["big", "small"]
    for drafter in drafters:
        weights = value(samples, "tgi_csd_drafter_memory_bytes", drafter=drafter.name, kind="weights")
        assert weights == drafter.runner.weight_bytes > 0
        assert value(samples, "tgi_csd_drafter_memory_bytes", drafter=drafter.name, kind="kv") \
            == drafter.runner.cache.nbytes
        assert value(samples, "tgi_csd_drafter_memory_bytes", drafter=drafter.name, kind="kv_peak") > 0
    big, small = (value(samples, "tgi_csd_drafter_memory_bytes", drafter=n, kind="weights") for n in ("big", "small"))
    assert big > small  # 3 layers against 1, over the same embeddings and head


def test_profiles_are_a_label(target, served):
    """Requests by speculation profile, and the target's draft tokens by profile and drafter."""
    from tgi_csd.drafters.mag import MaGDrafter
    from tgi_csd.engine import Engine
    from tgi_csd.runner import ModelRunner

    engine = Engine.assemble(ModelRunner(target, "target"), [MaGDrafter(None)], [[4]], StubTokenizer(),
                             profiles={"long": [8]})
    choices = ["auto", "off", "long"]
    engine.generate([Request(prompt_ids=p, max_new_tokens=16, speculation=choices[i % 3])
                     for i, p in enumerate(PROMPTS)])
    samples = scrape(served(engine_stats(engine)).port)
    stats = engine.stats
    for profile in choices:
        assert value(samples, "tgi_csd_profile_requests_total", profile=profile) == stats.profile_requests[profile]
    for profile in ("auto", "long"):
        pair = stats.profile_pairs[(profile, "mag")]
        assert pair.proposed > 0
        assert value(samples, "tgi_csd_profile_draft_tokens_total", profile=profile, drafter="mag") == pair.proposed
        assert value(samples, "tgi_csd_profile_accepted_tokens_total", profile=profile, drafter="mag") == pair.accepted
    assert ("off", "mag") not in stats.profile_pairs
