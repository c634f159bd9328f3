"""Prometheus metrics and a periodic log line, both read from `EngineStats` when asked for.

Nothing here counts anything: the collector turns one `EngineStats` snapshot into metric families
at scrape time, and `SummaryLog` formats one line from it. Names follow vLLM's spec-decode metrics
(`vllm:spec_decode_num_drafts`, `..._num_draft_tokens`, `..._num_accepted_tokens`,
`..._num_accepted_tokens_per_pos`), prefixed `tgi_csd_`. See docs/metrics.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tgi_csd.errors import ConfigError
from tgi_csd.stats import EngineStats

if TYPE_CHECKING:
    from tgi_csd.engine import Engine

PORT_ENV = "TGI_CSD_METRICS_PORT"
RANK_ENV = "RANK"
PREFIX = "tgi_csd"
TOP_REVIEWER = "target"

log = logging.getLogger("tgi_csd")

StatsSource = Callable[[], EngineStats]


def engine_stats(engine: Engine) -> StatsSource:
    """A source for `engine`: its stats with the runners' forward counts and times copied in."""
    return engine.refresh_stats


def _read(stats: StatsSource, tries: int = 5) -> EngineStats:
    """`stats()`, retried when the engine thread resized a dict the source was iterating."""
    for _ in range(tries - 1):
        try:
            return stats()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return stats()


def _items(mapping: dict) -> list:
    """A copy of `mapping.items()` that tolerates another thread inserting keys meanwhile."""
    for _ in range(4):
        try:
            return list(mapping.items())
        except RuntimeError:
            continue
    return list(mapping.items())


# -- the collector -----------------------------------------------------------------------------------


class SpecDecodeCollector(Collector):
    """Counters and gauges of one engine's `EngineStats`, built at every scrape.

    Invariants (for a stats snapshot taken between steps of an engine): counters never decrease;
    per reviewer, `num_draft_tokens` summed over drafters equals `num_draft_tokens_per_pos` summed
    over positions, and the same for accepted tokens; `acceptance_rate` = accepted / draft tokens
    of the pair (omitted while the pair has proposed nothing).
    """

    def __init__(self, stats: StatsSource, prefix: str = PREFIX) -> None:
        self.stats = stats
        self.prefix = prefix

    def describe(self) -> Iterator[Metric]:
        """The families without samples (lets a registry detect name clashes without reading stats)."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(_read(self.stats))

    def _families(self, s: EngineStats | None) -> Iterator[Metric]:
        p = self.prefix

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"{p}_{name}", doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{p}_{name}", doc, labels=labels)

        drafts = counter("spec_decode_num_drafts", "Rows that received a non-empty draft, per reviewer.", ["reviewer"])
        draft_tokens = counter("spec_decode_num_draft_tokens",
                               "Draft tokens proposed by a drafter to a reviewer.", ["reviewer", "drafter"])
        accepted = counter("spec_decode_num_accepted_tokens",
                           "Draft tokens of a drafter that a reviewer accepted.", ["reviewer", "drafter"])
        pos_drafts = counter("spec_decode_num_draft_tokens_per_pos",
                             "Draft tokens verified at 0-based draft position, per reviewer.", ["reviewer", "position"])
        pos_accepted = counter("spec_decode_num_accepted_tokens_per_pos",
                               "Draft tokens accepted at 0-based draft position, per reviewer.",
                               ["reviewer", "position"])
        off = counter("speculation_off_steps", "Decode steps in which the top cascade drafted nothing.", [])
        steps = counter("steps", "Engine steps (prefill and decode).", [])
        generated = counter("generated_tokens", "Tokens emitted by the target.", [])
        forwards = counter("target_forwards", "Target model forwards (prefill and verification).", [])
        calls = counter("drafter_calls", "Propose calls per drafter.", ["drafter"])
        seconds = counter("drafter_seconds",
                          "Wall seconds in a drafter's propose calls (its own nested drafting included).", ["drafter"])
        drafter_forwards = counter("drafter_forwards", "Model forwards per neural drafter.", ["drafter"])
        current_k = gauge("current_k", "Draft tokens a drafter is currently allotted in a reviewer's cascade.",
                          ["reviewer", "drafter"])
        rate = gauge("acceptance_rate", "Cumulative accepted / proposed draft tokens of a drafter for a reviewer.",
                     ["reviewer", "drafter"])
        drafter_faults = counter("drafter_faults", "Proposals that broke the drafting contract, cut away.",
                                 ["drafter", "kind"])
        profile_requests = counter("profile_requests", "Requests that joined, by speculation profile (auto, off or "
                                   "a configured profile).", ["profile"])
        profile_drafts = counter("profile_draft_tokens", "The target's draft tokens by the requests' profile and "
                                 "the drafter that proposed them.", ["profile", "drafter"])
        profile_accepted = counter("profile_accepted_tokens", "The target's accepted draft tokens by the "
                                   "requests' profile and drafter.", ["profile", "drafter"])
        sources = counter("mag_draft_rows", "Rows MaG drafted for, by where the draft came from: the request's "
                          "own history, the store of recent requests, the bigram table, or none.",
                          ["drafter", "source"])
        store_bytes = gauge("suffix_store_bytes", "Memory charged to MaG's store of recent requests (never above its "
                            "memory_mb).", ["drafter"])
        store_sequences = gauge("suffix_store_sequences", "Requests held in MaG's store.", ["drafter"])
        memory = gauge("drafter_memory_bytes", "A model drafter's memory: its weights (tensors it shares with "
                       "other drafters counted in each), its KV cache now and at its peak.", ["drafter", "kind"])
        strategy_faults = counter("strategy_faults", "Strategy hooks that failed inside TGI; each cost one step of "
                                  "speculation.", ["hook"])
        if s is not None:
            for reviewer, n in _items(s.drafts):
                drafts.add_metric([reviewer], n)
            for (reviewer, drafter), pair in _items(s.pairs):
                proposed, ok = pair.proposed, pair.accepted
                draft_tokens.add_metric([reviewer, drafter], proposed)
                accepted.add_metric([reviewer, drafter], ok)
                if proposed:
                    rate.add_metric([reviewer, drafter], ok / proposed)
            for (reviewer, position), pair in sorted(_items(s.positions)):
                pos_drafts.add_metric([reviewer, str(position)], pair.proposed)
                pos_accepted.add_metric([reviewer, str(position)], pair.accepted)
            off.add_metric([], s.speculation_off_steps)
            steps.add_metric([], s.steps)
            generated.add_metric([], s.generated_tokens)
            forwards.add_metric([], s.target_forwards)
            for drafter, n in _items(s.calls):
                calls.add_metric([drafter], n)
            for drafter, secs in _items(s.call_seconds):
                seconds.add_metric([drafter], secs)
            for drafter, n in _items(s.drafter_forwards):
                drafter_forwards.add_metric([drafter], n)
            for reviewer, ks in _items(s.current_k):
                for drafter, k in _items(ks):
                    current_k.add_metric([reviewer, drafter], k)
            for key, n in _items(s.drafter_faults):
                drafter_faults.add_metric(key.rsplit(":", 1), n)
            for hook, n in _items(s.strategy_faults):
                strategy_faults.add_metric([hook], n)
            for (drafter, source), n in _items(s.draft_sources):
                sources.add_metric([drafter, source], n)
            for drafter, n in _items(s.store_bytes):
                store_bytes.add_metric([drafter], n)
            for drafter, n in _items(s.store_sequences):
                store_sequences.add_metric([drafter], n)
            for profile, n in _items(s.profile_requests):
                profile_requests.add_metric([profile], n)
            for (profile, drafter), pair in _items(s.profile_pairs):
                profile_drafts.add_metric([profile, drafter], pair.proposed)
                profile_accepted.add_metric([profile, drafter], pair.accepted)
            for kind, sizes in (("weights", s.drafter_weight_bytes), ("kv", s.drafter_kv_bytes),
                                ("kv_peak", s.drafter_kv_peak_bytes)):
                for drafter, n in _items(sizes):
                    memory.add_metric([drafter, kind], n)
        yield from (drafts, draft_tokens, accepted, pos_drafts, pos_accepted, off, steps, generated, forwards,
                    calls, seconds, drafter_forwards, current_k, rate, drafter_faults, strategy_faults, memory,
                    profile_requests, profile_drafts, profile_accepted, sources, store_bytes, store_sequences)


# -- serving ---------------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """A running /metrics endpoint: its registry (holding one `SpecDecodeCollector`), HTTP server
    and daemon thread. `port` is the bound port (the OS's choice when asked for port 0)."""

    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _start(stats: StatsSource, port: int, addr: str) -> MetricsServer:
    registry = CollectorRegistry()
    registry.register(SpecDecodeCollector(stats))
    started = start_http_server(port, addr, registry=registry)
    if not isinstance(started, tuple):  # prometheus_client < 0.20 returns None: no handle on the port
        raise RuntimeError("tgi-csd metrics need prometheus_client>=0.20 (start_http_server returning the server)")
    server, thread = started
    return MetricsServer(registry, server, thread)


def serve(stats: StatsSource, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve `stats` as Prometheus metrics at http://addr:port/metrics from a daemon thread, with a
    fresh registry (so several engines in one process do not clash). Port 0: any free port, see
    `.port`. A port outside 0..65535 or one that cannot be bound raises ConfigError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics: port {port} is out of range 0..65535")
    try:
        return _start(stats, port, addr)
    except OSError as e:
        raise ConfigError(f"metrics: cannot listen on {addr}:{port} ({e.strerror or e}); "
                          "choose a free port") from e


def _env_int(name: str, default: int | None, fix: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; {fix}") from None


def serve_from_env(stats: StatsSource, rank: int | None = None, addr: str = "0.0.0.0") -> MetricsServer | None:
    """`serve(stats, $TGI_CSD_METRICS_PORT, addr)` on rank 0 only (rank: the argument, else $RANK,
    else 0). Returns None, serving nothing, when the variable is unset or empty or on other ranks.
    A non-integer or out-of-range port, or one already in use, raises ConfigError naming the variable."""
    fix = f"set {PORT_ENV} to a free TCP port (the chart uses 9400) or unset it to serve no metrics"
    port = _env_int(PORT_ENV, None, fix)
    if port is None:
        return None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{PORT_ENV}={port} is out of range 0..65535; {fix}")
    if rank is None:
        rank = _env_int(RANK_ENV, 0, f"{RANK_ENV} is the shard's rank: an integer (0 serves the metrics)")
    if rank != 0:
        return None
    try:
        server = _start(stats, port, addr)
    except OSError as e:
        raise ConfigError(f"{PORT_ENV}={port}: cannot listen on {addr}:{port} ({e.strerror or e}); {fix}") from e
    log.info("tgi-csd: Prometheus metrics on http://%s:%d/metrics", addr, server.port)
    return server


# -- the periodic log line -------------------------------------------------------------------------


def _percent(accepted: int, proposed: int) -> str:
    return f"{100 * accepted / proposed:.0f}%" if proposed else "n/a"


def summary_line(s: EngineStats, tokens_before: int = 0, reviewer: str = TOP_REVIEWER) -> str:
    """One line: steps, tokens per target forward (when forwards are known), `reviewer`'s acceptance
    overall and per drafter, every reviewer's current k, speculation-off steps, and the tokens
    generated since `tokens_before`."""
    pairs = [(drafter, pair.proposed, pair.accepted) for (rev, drafter), pair in _items(s.pairs) if rev == reviewer]
    proposed = sum(p for _, p, _ in pairs)
    accepted = sum(a for _, _, a in pairs)
    parts = [f"{s.steps} steps"]
    if s.target_forwards:
        parts.append(f"{s.tokens_per_target_forward:.2f} tok/fwd")
    per_drafter = ", ".join(f"{d}->{reviewer} {_percent(a, p)}" for d, p, a in pairs)
    parts.append(f"accepted {_percent(accepted, proposed)}" + (f" ({per_drafter})" if per_drafter else ""))
    ks = " ".join(
        f"{rev}={{{', '.join(f'{d}: {k}' for d, k in _items(alloc))}}}" for rev, alloc in _items(s.current_k)
    )
    if ks:
        parts.append(f"k {ks}")
    parts.append(f"off {s.speculation_off_steps} steps")
    parts.append(f"+{s.generated_tokens - tokens_before} tokens since last")
    return "tgi-csd: " + ", ".join(parts)


class SummaryLog:
    """Call `tick()` once per step; it logs `summary_line` at INFO at most once per `every_seconds`
    (the first line one interval after the first tick). `stats` is read on the first tick and when
    logging only. `clock` is injectable for tests (default `time.monotonic`)."""

    def __init__(self, stats: StatsSource, every_seconds: float = 30.0,
                 logger: logging.Logger = logging.getLogger("tgi_csd"),
                 clock: Callable[[], float] = time.monotonic, reviewer: str = TOP_REVIEWER) -> None:
        if every_seconds <= 0:
            raise ConfigError(f"every_seconds={every_seconds}: must be > 0")
        self.stats = stats
        self.every_seconds = every_seconds
        self.logger = logger
        self.clock = clock
        self.reviewer = reviewer
        self._due: float | None = None
        self._tokens = 0

    def tick(self) -> str | None:
        """The line logged now, or None when the interval has not passed yet."""
        now = self.clock()
        if self._due is None:
            self._due = now + self.every_seconds
            self._tokens = _read(self.stats).generated_tokens
            return None
        if now < self._due:
            return None
        s = _read(self.stats)
        line = summary_line(s, self._tokens, self.reviewer)
        self._tokens = s.generated_tokens
        self._due = now + self.every_seconds
        self.logger.info("%s", line)
        return line
