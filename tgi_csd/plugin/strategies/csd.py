"""`csd`: Cascade Speculative Drafting as a TGI speculation strategy.

The shard is the target. The drafters and the cascade that drafts for it come from a
`CascadeConfig` YAML (`--speculation-config`; its `target.model` is not loaded as a target), or,
with no config, MaG (suffix match + the default bigram table) filling all S positions.

Per-request drafter state (MaG suffix indexes, model drafters' KV caches) lives in drafter rows;
`rows[j]` is the request id of row j. Rows are global across TGI batches, so filter and
concatenate move no data: only the rows of requests that left are dropped.

Drafts are greedy: TGI verifies by exact match of the target's own (greedy or seeded-sampled)
choice, so a draft's probabilities are never used, and outputs do not depend on the drafts.

With `adaptive` in the config, the top row's controller may turn speculation off for a step: every
row's draft is then empty, the host passes no speculative ids, and the shard runs a plain decode
step (TGI handles `speculative_ids=None` as it does after merging batches). The shard's step time,
measured between proposals of equal batch size, is the controller's cost of verification.
"""

from __future__ import annotations

import logging

from tgi_csd import clock
from tgi_csd.cascade import Draft
from tgi_csd.metrics import MetricsServer, SummaryLog, serve_from_env
from tgi_csd.plugin.hookspecs import hookimpl
from tgi_csd.sampling import SamplingParams
from tgi_csd.tokens import TokenSeq

log = logging.getLogger(__name__)


class CSDStrategy:
    def __init__(self, cascade, speculate: int) -> None:
        self.cascade = cascade
        self.top = cascade.top
        self.drafters = cascade.drafters
        self.stats = cascade.stats
        self.speculate = speculate
        self.rows: list[int] = []
        self.row_of: dict[int, int] = {}
        self.histories: list[list[int]] = []
        self.last: dict[int, tuple[list[int], list[str]]] = {}  # request id -> last draft (tokens, origins)
        self.steps = 0
        self.proposed = 0
        self.accepted = 0
        self._last_step: tuple[int, int, float] | None = None  # rows, tokens verified, when proposed
        self.summary = SummaryLog(lambda: self.stats, logger=log)
        self.metrics: MetricsServer | None = None  # the Prometheus endpoint, when this shard serves it

    # -- rows ------------------------------------------------------------------------------------
    def _commit(self) -> None:
        for drafter in self.drafters:
            drafter.commit(self.histories)

    def _drop(self, request_ids) -> None:
        gone = {r for r in request_ids if r in self.row_of}
        if not gone:
            return
        keep = [row for row, request_id in enumerate(self.rows) if request_id not in gone]
        for drafter in self.drafters:
            drafter.keep_rows(keep)
        self.rows = [self.rows[row] for row in keep]
        self.histories = [self.histories[row] for row in keep]
        self.row_of = {request_id: row for row, request_id in enumerate(self.rows)}
        for request_id in gone:
            self.last.pop(request_id, None)

    # -- hooks -----------------------------------------------------------------------------------
    @hookimpl
    def tgi_speculation_add(self, request_ids, histories):
        from tgi_csd.drafters.base import RowInfo

        self._drop([r for r in request_ids if r in self.row_of])
        infos = [RowInfo(history, SamplingParams()) for history in histories]
        for drafter in self.drafters:
            drafter.add_rows(infos)
        for request_id, history in zip(request_ids, histories):
            self.row_of[request_id] = len(self.rows)
            self.rows.append(request_id)
            self.histories.append(history)
        self._commit()

    @hookimpl
    def tgi_speculation_propose(self, request_ids, histories, accepted, speculate):
        now = clock.now()
        if self._last_step is not None and self._last_step[0] == len(request_ids):
            self.cascade.target_cost.observe(self._last_step[1], now - self._last_step[2])
        rows = [self.row_of[r] for r in request_ids]
        # Credit the previous drafts with what the target accepted (accepted = 1 + matches).
        previous = [self.last.get(r) for r in request_ids]
        if any(p is not None for p in previous):
            done = [(p, min(n - 1, len(p[0]))) for p, n in zip(previous, accepted) if p is not None]
            self.top.record(Draft([p[0] for p, _ in done], [p[1] for p, _ in done], None), [n for _, n in done])
            self.accepted += sum(n for _, n in done)
        for row, history in zip(rows, histories):
            self.histories[row] = history
        # One proposal follows each target step of this batch; `accepted` are that step's tokens.
        self.stats.steps += 1
        self.stats.target_forwards += 1
        self.stats.generated_tokens += sum(accepted)
        self._commit()
        draft = self.top.propose(rows, [TokenSeq(h) for h in histories], [speculate] * len(rows))
        for request_id, tokens, origins in zip(request_ids, draft.tokens, draft.origins):
            self.last[request_id] = (tokens, origins)
            self.proposed += len(tokens)
        self.steps += 1
        drafted = any(draft.tokens)
        if not drafted:
            self.stats.speculation_off_steps += 1
        self._last_step = (len(rows), len(rows) * (1 + (speculate if drafted else 0)), clock.now())
        self.summary.tick()
        return draft.tokens

    @hookimpl
    def tgi_speculation_filter(self, removed):
        self._drop(removed)

    @hookimpl
    def tgi_speculation_clear_cache(self, batch_id, request_ids):
        if batch_id is None:
            self._drop(list(self.rows))
        else:
            self._drop(request_ids)

    @hookimpl
    def tgi_speculation_stats(self):
        from tgi_csd.drafters.model import ModelDrafter

        report = self.stats.as_dict()
        return {
            "proposal_steps": self.steps,
            "draft_tokens_proposed": self.proposed,
            "draft_tokens_accepted": self.accepted,
            "live_rows": len(self.rows),
            "drafts": report["drafts"],
            "drafter_forwards": {d.name: d.runner.forwards for d in self.drafters if isinstance(d, ModelDrafter)},
        }


@hookimpl
def tgi_speculation_create(tokenizer, speculate, config, model_id, vocab_size):
    from tgi_csd.config import load_config
    from tgi_csd.plugin.cascade_builder import build_cascade, default_config

    cascade_config = load_config(config) if config else default_config(speculate)
    row0 = sum(cascade_config.k_matrix[0])
    if row0 < speculate:
        log.warning("csd: k_matrix row 0 drafts %d ids but --speculate is %d; the other %d positions are padding "
                    "(verified for nothing): lower --speculate or raise the k-matrix",
                    row0, speculate, speculate - row0)
    elif row0 > speculate:
        log.info("csd: k_matrix row 0 drafts %d ids; --speculate %d keeps the first %d", row0, speculate, speculate)
    cascade = build_cascade(cascade_config, tokenizer=tokenizer, vocab_size=vocab_size, model_id=model_id,
                            speculate=speculate)
    log.info("csd: drafters %s, k_matrix %s%s", [d.name for d in cascade.drafters], cascade_config.k_matrix,
             " (adaptive bounds)" if cascade_config.adaptive else "")
    strategy = CSDStrategy(cascade, speculate)
    strategy.metrics = serve_from_env(lambda: cascade.stats)
    if strategy.metrics is not None:
        log.info("csd: Prometheus metrics on port %d (TGI_CSD_METRICS_PORT)", strategy.metrics.port)
    return strategy
