"""The drafting core: the drafters, one row per live request, the cascade that drafts for the target, and
the counters. The engine drives it with its own target; the TGI strategy drives it with the shard as the
target. Neither touches a drafter.

A step, from the driver's side: `propose` drafts for some of the live requests; the target verifies;
`settle` credits each request's draft with how many of its tokens the target accepted; the accepted
tokens go into the requests' histories (lists the session holds by reference, given at `add` or
`update`); `commit` tells every drafter. Requests join with `add` and leave with `drop`.
"""

from __future__ import annotations

from tgi_csd.drafters.base import Drafter, RowInfo
from tgi_csd.drafters.cascade import Draft, HorizontalCascade
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.sampling import SamplingParams
from tgi_csd.stats import EngineStats
from tgi_csd.tokens import TokenSeq


class DraftingSession:
    """Invariants: every drafter's rows follow `ids` in order; an id is live at most once; a draft is
    credited (`settle`) at most once, and never after its request left."""

    def __init__(self, drafters: list[Drafter], top: HorizontalCascade, stats: EngineStats) -> None:
        self.drafters = drafters
        self.top = top
        self.stats = stats
        self.ids: list[int] = []
        self.row_of: dict[int, int] = {}
        self.histories: list[list[int]] = []
        self.pending: dict[int, tuple[list[int], list[str]]] = {}  # id -> the draft awaiting its verdict

    @property
    def max_tokens(self) -> int:
        """The longest draft the top cascade proposes."""
        return self.top.max_tokens

    # -- membership ----------------------------------------------------------------------------------
    def add(self, ids: list[int], histories: list[list[int]], params: list[SamplingParams] | None = None) -> None:
        """Requests join (after their prefill): rows appended in order; `histories[i]` is held by reference."""
        clash = [i for i in ids if i in self.row_of]
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"requests {clash or ids} are already live in the drafting session")
        params = params or [SamplingParams()] * len(ids)
        infos = [RowInfo(history, param) for history, param in zip(histories, params)]
        for drafter in self.drafters:
            drafter.add_rows(infos)
        for request_id, history in zip(ids, histories):
            self.row_of[request_id] = len(self.ids)
            self.ids.append(request_id)
            self.histories.append(history)
        self.commit()

    def drop(self, ids) -> None:
        """Requests leave (ids not live are ignored); the other rows keep their order."""
        gone = {i for i in ids if i in self.row_of}
        if not gone:
            return
        keep = [row for row, request_id in enumerate(self.ids) if request_id not in gone]
        for drafter in self.drafters:
            drafter.keep_rows(keep)
        self.ids = [self.ids[row] for row in keep]
        self.histories = [self.histories[row] for row in keep]
        self.row_of = {request_id: row for row, request_id in enumerate(self.ids)}
        for request_id in gone:
            self.pending.pop(request_id, None)

    def update(self, ids: list[int], histories: list[list[int]]) -> None:
        """Hold `histories[i]` as request `ids[i]`'s history from now on."""
        for request_id, history in zip(ids, histories):
            self.histories[self.row_of[request_id]] = history

    def commit(self) -> None:
        """Every drafter learns the committed histories (after each target step)."""
        for drafter in self.drafters:
            drafter.commit(self.histories)

    # -- one step --------------------------------------------------------------------------------------
    def propose(self, ids: list[int], limits: list[int]) -> Draft:
        """Drafts for requests `ids`, at most `limits[i]` tokens each; remembered until `settle`."""
        rows = [self.row_of[i] for i in ids]
        draft = self.top.propose(rows, [TokenSeq(self.histories[row]) for row in rows], limits)
        if not any(self.top.sizes):
            self.stats.speculation_off_steps += 1
        for request_id, tokens, origins in zip(ids, draft.tokens, draft.origins):
            self.pending[request_id] = (tokens, origins)
        return draft

    def settle(self, ids: list[int], accepted: list[int]) -> None:
        """Request `ids[i]`'s last draft had its first `accepted[i]` tokens accepted: count it, teach the
        controllers. Ids without a pending draft are skipped."""
        done = [(self.pending.pop(i), n) for i, n in zip(ids, accepted) if i in self.pending]
        if done:
            self.top.record(Draft([d[0] for d, _ in done], [d[1] for d, _ in done], None),
                            [min(n, len(d[0])) for d, n in done])

    # -- reporting -------------------------------------------------------------------------------------
    @property
    def model_drafters(self) -> list[ModelDrafter]:
        return [d for d in self.drafters if isinstance(d, ModelDrafter)]

    def track_memory(self) -> None:
        """The model drafters' weight bytes, KV bytes now, and the largest KV seen at any call (call it after
        every step). A drafter's weights count every tensor it reads, shared ones (a cut's layers, a base
        under unmerged adapters) included."""
        for drafter in self.model_drafters:
            self.stats.drafter_weight_bytes[drafter.name] = drafter.runner.weight_bytes
            nbytes = drafter.runner.cache.nbytes
            self.stats.drafter_kv_bytes[drafter.name] = nbytes
            peak = self.stats.drafter_kv_peak_bytes.get(drafter.name, 0)
            self.stats.drafter_kv_peak_bytes[drafter.name] = max(peak, nbytes)

    def refresh_stats(self) -> EngineStats:
        """`stats` with the model drafters' forward counts and times copied in."""
        for drafter in self.model_drafters:
            self.stats.drafter_forwards[drafter.name] = drafter.runner.forwards
            self.stats.drafter_seconds[drafter.name] = drafter.runner.forward_seconds
        self.track_memory()
        return self.stats
