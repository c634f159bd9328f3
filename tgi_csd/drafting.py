"""The drafting core: the drafters, one row per live request, the cascade that drafts for the target, and
the counters. The engine drives it with its own target; the TGI strategy drives it with the shard as the
target. Neither touches a drafter.

A step, from the driver's side: `propose` drafts for some of the live requests (told, when the driver knows
it, that nothing waits to join and how many tokens each request still needs); the target verifies;
`settle` credits each request's draft with how many of its tokens the target accepted; the accepted
tokens go into the requests' histories (lists the session holds by reference, given at `add` or
`update`); `commit` tells every drafter. Requests join with `add` and leave with `drop`.

Each request chooses its speculation when it joins: `auto` (the config's top cascade), `off` (no draft:
its row is verified alone while the others speculate) or a profile's name (another top cascade over the same
drafters, `CascadeConfig.profiles`). The drafters and their per-request state are shared by all; each top
cascade keeps its own controller (so adaptive control counts rows by profile). What each request's drafts
gave is kept per request (`request_report`) and per profile (`stats.profile_pairs`), and so is each request's
pace (`adaptive.RowPace`): the draft tokens it gained against what the other rows of its profile gained from
the same steps' drafts, so a drafter's quality cancels out and what is left is how well the request's text
suits drafting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tgi_csd.adaptive import KController, RowPace
from tgi_csd.drafters.base import Drafter, RowInfo
from tgi_csd.drafters.cascade import Draft, HorizontalCascade
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.sampling import SamplingParams
from tgi_csd.stats import EngineStats, PairStats
from tgi_csd.tokens import TokenSeq

AUTO, OFF = "auto", "off"
#: finished requests whose pace a new request's prior comes from
PACE_HISTORY = 64
#: how fast the typical gain of a draft (what a lone row's pace is measured against) follows the batches' steps
TYPICAL_SMOOTHING = 0.1


@dataclass
class RequestDrafts:
    """One request's speculation so far: its profile, and draft tokens proposed / accepted per drafter."""

    profile: str
    drafters: dict[str, PairStats] = field(default_factory=dict)
    expected: float = 0.0  # accepted draft tokens its profile's rows gained on average in the steps it drafted
    gained: int = 0  # its own accepted draft tokens in those steps

    def pace(self, remaining: int, prior: float = 1.0) -> RowPace:
        """This request as a row of a draining batch, its pace shrunk towards `prior` (an `off` request goes at
        one token a step)."""
        if self.profile == OFF:
            return RowPace(remaining, 0.0)
        return RowPace.of(remaining, self.gained, self.expected, prior)

    def as_dict(self) -> dict:
        drafters = {name: {"proposed": p.proposed, "accepted": p.accepted} for name, p in self.drafters.items()}
        return {"profile": self.profile, "drafters": drafters}


class DraftingSession:
    """Invariants: every drafter's rows follow `ids` in order; an id is live at most once; a draft is
    credited (`settle`) at most once, and never after its request left; a request's draft comes from its own
    profile's top cascade (none for `off`)."""

    def __init__(self, drafters: list[Drafter], top: HorizontalCascade, stats: EngineStats,
                 profiles: dict[str, HorizontalCascade] | None = None) -> None:
        self.drafters = drafters
        self.top = top
        self.tops = {AUTO: top, **(profiles or {})}
        self.stats = stats
        self.requests: dict[int, RequestDrafts] = {}
        self.ids: list[int] = []
        self.row_of: dict[int, int] = {}
        self.histories: list[list[int]] = []
        self.pending: dict[int, tuple[list[int], list[str], int]] = {}  # id -> the draft awaiting its verdict
        self.paces: deque[float] = deque(maxlen=PACE_HISTORY)  # recent finished requests' paces (with evidence)
        self.typical_gain: dict[tuple[str, int], float] = {}  # (profile, positions asked) -> rows' average gain

    @property
    def max_tokens(self) -> int:
        """The longest draft any top cascade proposes."""
        return max(top.max_tokens for top in self.tops.values())

    @property
    def choices(self) -> list[str]:
        """What a request's speculation may be."""
        return [AUTO, OFF, *(name for name in self.tops if name != AUTO)]

    # -- membership ----------------------------------------------------------------------------------
    def add(self, ids: list[int], histories: list[list[int]], params: list[SamplingParams] | None = None,
            speculation: list[str] | None = None) -> None:
        """Requests join (after their prefill): rows appended in order; `histories[i]` is held by reference;
        `speculation[i]` is request i's choice (`auto` when not given)."""
        clash = [i for i in ids if i in self.row_of]
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"requests {clash or ids} are already live in the drafting session")
        speculation = speculation or [AUTO] * len(ids)
        unknown = sorted({s for s in speculation if s not in self.choices})
        if unknown:
            raise ValueError(f"speculation: unknown profile {unknown[0]!r}; choose one of {', '.join(self.choices)}")
        params = params or [SamplingParams()] * len(ids)
        infos = [RowInfo(history, param) for history, param in zip(histories, params)]
        for drafter in self.drafters:
            drafter.add_rows(infos)
        for request_id, history, choice in zip(ids, histories, speculation):
            self.row_of[request_id] = len(self.ids)
            self.ids.append(request_id)
            self.histories.append(history)
            self.requests[request_id] = RequestDrafts(choice)
            self.stats.profile_requests[choice] += 1
        self.commit()

    def drop(self, ids) -> None:
        """Requests leave (ids not live are ignored); the other rows keep their order. Their tokens go to
        the MaG drafters' stores of recent requests (where they have one), except those of requests that chose
        `off`."""
        gone = {i for i in ids if i in self.row_of}
        if not gone:
            return
        for drafter in self.drafters:
            if isinstance(drafter, MaGDrafter):
                for request_id in gone:
                    if self.requests[request_id].profile != OFF:
                        drafter.remember(self.histories[self.row_of[request_id]])
        keep = [row for row, request_id in enumerate(self.ids) if request_id not in gone]
        for drafter in self.drafters:
            drafter.keep_rows(keep)
        self.ids = [self.ids[row] for row in keep]
        self.histories = [self.histories[row] for row in keep]
        self.row_of = {request_id: row for row, request_id in enumerate(self.ids)}
        for request_id in gone:
            self.pending.pop(request_id, None)
            report = self.requests.pop(request_id)
            if report.expected >= 1.0:
                self.paces.append(report.pace(0).factor)

    def pace_prior(self, rows: int) -> float:
        """What a request's pace is taken to be before its own drafts say, in a draining batch of `rows` rows: the
        pace of the slowest of `rows` recent requests (their `1 / (rows + 1)` quantile), 1 before any finished and
        for a lone row. A batch ends with its slowest row, so a fresh batch is priced by the laggard it will
        likely hold."""
        if not self.paces or rows < 2:
            return 1.0
        ordered = sorted(self.paces)
        return ordered[len(ordered) // (rows + 1)]

    def request_report(self, request_id: int) -> dict:
        """Request `request_id`'s profile and its draft tokens proposed / accepted per drafter (while live)."""
        return self.requests[request_id].as_dict()

    def update(self, ids: list[int], histories: list[list[int]]) -> None:
        """Hold `histories[i]` as request `ids[i]`'s history from now on."""
        for request_id, history in zip(ids, histories):
            self.histories[self.row_of[request_id]] = history

    def commit(self) -> None:
        """Every drafter learns the committed histories (after each target step)."""
        for drafter in self.drafters:
            drafter.commit(self.histories)

    # -- one step --------------------------------------------------------------------------------------
    def propose(self, ids: list[int], limits: list[int], remaining: list[int] | None = None) -> Draft:
        """Drafts for requests `ids`, at most `limits[i]` tokens each, each from its profile's top cascade;
        remembered until `settle`. `remaining[i]`, when given, is how many tokens request `ids[i]` still needs,
        and says that `ids` is the whole batch and nothing waits to join: the batch drains, and each adaptive
        controller prices its rows by when the last of them (or of the `off` rows) would finish."""
        tokens: list[list[int]] = [[] for _ in ids]
        origins: list[list[str]] = [[] for _ in ids]
        asked = [0] * len(ids)
        probs: list[list] | None = None
        speculating = False  # whether any top cascade used this step allots draft positions
        groups = self._by_profile(ids)
        prior = self.pace_prior(len(ids)) if remaining is not None else 1.0
        for profile, members in groups.items():
            if profile == OFF:
                continue
            top = self.tops[profile]
            rows = [self.row_of[ids[i]] for i in members]
            pace = None if remaining is None else [
                self.requests[ids[i]].pace(remaining[i], prior) for i in (*members, *groups.get(OFF, ()))]
            draft = top.propose(rows, [TokenSeq(self.histories[row]) for row in rows], [limits[i] for i in members],
                                pace)
            speculating = speculating or any(top.sizes)
            if draft.probs is not None and probs is None:
                probs = [[None] * len(t) for t in tokens]
            for slot, i in enumerate(members):
                tokens[i], origins[i] = draft.tokens[slot], draft.origins[slot]
                asked[i] = draft.asked[slot] if draft.asked is not None else len(tokens[i])
                if probs is not None:
                    probs[i] = draft.probs[slot] if draft.probs is not None else [None] * len(tokens[i])
        if not speculating:
            self.stats.speculation_off_steps += 1
        for request_id, row_tokens, row_origins, row_asked in zip(ids, tokens, origins, asked):
            self.pending[request_id] = (row_tokens, row_origins, row_asked)
        return Draft(tokens, origins, probs, asked)

    def _by_profile(self, ids: list[int]) -> dict[str, list[int]]:
        """Positions in `ids` grouped by their request's profile (in order)."""
        groups: dict[str, list[int]] = {}
        for i, request_id in enumerate(ids):
            groups.setdefault(self.requests[request_id].profile, []).append(i)
        return groups

    def settle(self, ids: list[int], accepted: list[int]) -> None:
        """Request `ids[i]`'s last draft had its first `accepted[i]` tokens accepted: count it, teach the
        controllers. Ids without a pending draft are skipped."""
        settled = []
        for request_id, count in zip(ids, accepted):
            if request_id in self.pending:
                tokens, origins, asked = self.pending.pop(request_id)
                settled.append((request_id, (tokens, origins, asked), min(count, len(tokens))))
        for request_id, (_, origins, _), count in settled:
            report = self.requests[request_id]
            for position, name in enumerate(origins):
                pair = report.drafters.setdefault(name, PairStats())
                profile_pair = self.stats.profile_pairs[(report.profile, name)]
                pair.proposed += 1
                profile_pair.proposed += 1
                if position < count:
                    pair.accepted += 1
                    profile_pair.accepted += 1
        for profile, members in self._by_profile([i for i, _, _ in settled]).items():
            if profile != OFF:
                chosen = [settled[m] for m in members]
                self.tops[profile].record(Draft([d[0] for _, d, _ in chosen], [d[1] for _, d, _ in chosen], None,
                                                [d[2] for _, d, _ in chosen]), [n for _, _, n in chosen])
                if isinstance(self.tops[profile].controller, KController):
                    self._pace(profile, [(request_id, d[2], n) for request_id, d, n in chosen])

    def _pace(self, profile: str, drafts: list[tuple[int, int, int]]) -> None:
        """Per (request id, positions asked, tokens accepted) of one profile's step: each request gained its own
        tokens where the profile's rows gained, on average, their accepted tokens within as many positions (a
        lone row: where recent rows did within as many positions or the nearest fewer, `typical_gain`)."""
        asking = [n for _, asked, n in drafts if asked]
        average: dict[int, float] = {}
        for asked in {asked for _, asked, _ in drafts if asked}:
            if len(asking) > 1:
                average[asked] = sum(min(n, asked) for n in asking) / len(asking)
                typical = self.typical_gain.get((profile, asked), average[asked])
                self.typical_gain[profile, asked] = typical + TYPICAL_SMOOTHING * (average[asked] - typical)
            else:
                known = [n for p, n in self.typical_gain if p == profile and n <= asked]
                if known:  # gains within fewer positions: a lower bound
                    average[asked] = self.typical_gain[profile, max(known)]
        for request_id, asked, accepted in drafts:
            if asked in average:
                report = self.requests[request_id]
                report.expected += average[asked]
                report.gained += accepted

    # -- reporting -------------------------------------------------------------------------------------
    @property
    def model_drafters(self) -> list[ModelDrafter]:
        return [d for d in self.drafters if isinstance(d, ModelDrafter)]

    @property
    def controllers(self) -> list[KController]:
        """Every adaptive controller: each top cascade's, each model drafter's own row's."""
        rows = [*self.tops.values(), *(d.below for d in self.model_drafters if d.below is not None)]
        return [row.controller for row in rows if isinstance(row.controller, KController)]

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
        """`stats` with the model drafters' forward counts and times, and MaG's sources and stores, copied in."""
        for drafter in self.model_drafters:
            self.stats.drafter_forwards[drafter.name] = drafter.runner.forwards
            self.stats.drafter_seconds[drafter.name] = drafter.runner.forward_seconds
        for drafter in self.drafters:
            if isinstance(drafter, MaGDrafter):
                for source, rows in drafter.sources.items():
                    self.stats.draft_sources[(drafter.name, source)] = rows
                if drafter.store is not None:
                    self.stats.store_bytes[drafter.name] = drafter.store.charged_bytes
                    self.stats.store_sequences[drafter.name] = drafter.store.stats.sequences
        self.track_memory()
        return self.stats
