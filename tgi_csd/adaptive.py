"""Adaptive k: a cost model over online statistics picks each reviewer's draft allocation per step.

Following the paper's analysis, a reviewer that verifies a draft whose position p is filled by
drafter d(p) gains, in expectation, `1 + sum_p prod_{q<=p} a(d(q), q)` tokens per review, where
a(d, q) is the probability that position q is accepted given that every earlier one was. That
review costs the reviewer's forward over `rows * (K + 1)` tokens plus each drafter's calls. The
controller picks the allocation (k per drafter, within the k-matrix's bounds; all zeros =
speculation off) with the most predicted tokens per second, measured, not assumed: costs and
acceptance rates are windowed online estimates, so the choice follows load and workload.

A batch with nothing waiting to join ends with its slowest row, so there the controller prices each
allocation by when the batch would finish: every row's steps to go at its own pace (how its drafts did
against the other rows' in the same steps), the slowest row's count times the step's time. A draft that
speeds up rows which are not last only widens the verify.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from tgi_csd.config import AdaptiveSettings


class SizeCost:
    """Seconds per call as a function of its size n (tokens fed, or rows x tokens asked).

    Per observed n an exponential moving average (a plain mean over its first `1 / smoothing`
    observations, so a size seen once is not stuck near its first timing). Predictions come from
    those averages made non-decreasing in n (pool-adjacent-violators, each size weighted by its
    observations, at most an EWMA's effective window): a bigger call never costs less, so one lucky
    timing at a large size cannot make that size look cheap. Other n interpolate linearly between
    the nearest sizes and extrapolate along the outermost two (never below zero, flat with a single
    size). `predict` is None before any observation or seed. A seed (a calibration's timing) stands for a
    size until that size is observed live; the seeds left follow the live averages of seeded sizes (`drift`:
    their live average over their seed, weighted by observations), so a size not yet seen live keeps its
    calibrated ratio to the sizes that were, whatever the load of the live steps, and one odd first timing
    (the step after a prefill) fades from the drift as it fades from its size's average.
    """

    SEED_WEIGHT = 0.5  # a seed's weight in the monotone fit, against 1 per live observation

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self.points: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self.seeds: dict[int, float] = {}  # the calibrated seconds of each seeded size
        self._sizes: list[int] = []
        self._fitted: list[float] | None = None
        self._drift: float | None = None

    @property
    def seeded(self) -> bool:
        return bool(self.seeds)

    @property
    def cap(self) -> float:
        """The most weight one size's average carries: an EWMA's effective window."""
        return (2 - self.smoothing) / self.smoothing

    @property
    def drift(self) -> float:
        """Live timings over the seeds of the same sizes (1 before any seeded size is seen live)."""
        if self._drift is None:
            pairs = [(min(self.counts[n], self.cap), self.points[n] / seed)
                     for n, seed in self.seeds.items() if self.counts[n] and seed > 0]
            weight = sum(w for w, _ in pairs)
            self._drift = sum(w * ratio for w, ratio in pairs) / weight if weight else 1.0
        return self._drift

    def seed(self, n: int, seconds: float) -> None:
        """What size `n` costs before it is seen live (ignored where it was)."""
        if self.counts.get(n, 0) == 0:
            if n not in self.points:
                bisect.insort(self._sizes, n)
            self.points[n], self.counts[n], self.seeds[n] = seconds, 0, seconds
            self._fitted = self._drift = None

    def observe(self, n: int, seconds: float) -> None:
        count = self.counts.get(n, 0) + 1
        if n not in self.points:
            bisect.insort(self._sizes, n)
        previous = self.points[n] if count > 1 else seconds  # a seed is replaced, not averaged with
        self.points[n], self.counts[n] = previous + max(self.smoothing, 1 / count) * (seconds - previous), count
        self._fitted = None
        if n in self.seeds:
            self._drift = None

    def _monotone(self) -> list[float]:
        """The averages at `_sizes`, pooled until non-decreasing (weighted pool-adjacent-violators)."""
        if self._fitted is None:
            blocks: list[list[float]] = []  # [mean, weight, number of sizes]
            for n in self._sizes:
                mean = self.points[n] if self.counts[n] else self.points[n] * self.drift
                blocks.append([mean, min(self.counts[n] or self.SEED_WEIGHT, self.cap), 1])
                while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                    (m2, w2, c2), (m1, w1, c1) = blocks.pop(), blocks.pop()
                    blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
            self._fitted = [mean for mean, _, count in blocks for _ in range(count)]
        return self._fitted

    def predict(self, n: int) -> float | None:
        sizes = self._sizes
        if not sizes:
            return None
        fitted = self._monotone()
        i = bisect.bisect_left(sizes, n)
        if i < len(sizes) and sizes[i] == n:
            return fitted[i]
        if len(sizes) == 1:
            return fitted[0]
        lo = min(max(i - 1, 0), len(sizes) - 2)
        slope = (fitted[lo + 1] - fitted[lo]) / (sizes[lo + 1] - sizes[lo])
        return max(0.0, fitted[lo] + slope * (n - sizes[lo]))


class ShapeCost:
    """Seconds per forward by its shape: `rows` rows fed `n` tokens in all (rows x padded width), attending to
    `context` positions (the forward's attention window; None: the calibration's).

    One `SizeCost` over n per power-of-two bucket of rows (`rows.bit_length()`): a forward over R rows costs
    more than one row of the same n tokens (here 4 rows x 2 tokens about 1.25x one row of 8, 16 x 2 about 1.9x
    one row of 32: each row attends over its own context), so a batch's verify is priced by batches, not by one
    long row. A bucket with no timing borrows the nearest bucket that has one, the larger on a tie (the dearer).

    Attention grows with the context: `attention` seconds per token fed per position attended (0 until
    `fit_attention` sets it from timings of the same shapes at two contexts), so a verify that costs 1.2x a plain
    step after 64 tokens costs 1.35x after 400. Timings are kept at the calibration's `context` (their attention
    beyond it taken off) and predictions add it back for the context asked.
    """

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self.buckets: dict[int, SizeCost] = {}
        self.attention = 0.0
        self.context = 0  # the context the buckets' timings stand for

    @property
    def seeded(self) -> bool:
        return any(cost.seeded for cost in self.buckets.values())

    def _bucket(self, rows: int) -> SizeCost:
        bucket = rows.bit_length()
        if bucket not in self.buckets:
            self.buckets[bucket] = SizeCost(self.smoothing)
        return self.buckets[bucket]

    def _beyond(self, n: int, context: int | None) -> float:
        """Seconds `n` tokens spend attending to `context` positions beyond the buckets' context."""
        return 0.0 if context is None else self.attention * n * (context - self.context)

    def fit_attention(self, timings: list[tuple[int, int, int, float]]) -> None:
        """Set `attention` (least squares, never below 0) from (rows, n, context, seconds) timings of the same
        (rows, n) at different contexts; the smallest context timed becomes `context`. Before seeding them."""
        by_shape: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
        for rows, n, context, seconds in timings:
            by_shape[rows, n].append((context, seconds))
        pairs = [(n * (c1 - c0), s1 - s0) for (_, n), points in by_shape.items()
                 for (c0, s0), (c1, s1) in itertools.combinations(sorted(points), 2) if c1 > c0]
        if pairs:
            self.attention = max(0.0, sum(x * y for x, y in pairs) / sum(x * x for x, _ in pairs))
        self.context = min((context for _, _, context, _ in timings), default=self.context)

    def seed(self, rows: int, n: int, seconds: float, context: int | None = None) -> None:
        self._bucket(rows).seed(n, max(0.0, seconds - self._beyond(n, context)))

    def observe(self, rows: int, n: int, seconds: float, context: int | None = None) -> None:
        self._bucket(rows).observe(n, max(0.0, seconds - self._beyond(n, context)))

    def predict(self, rows: int, n: int, context: int | None = None) -> float | None:
        if not self.buckets:
            return None
        bucket = rows.bit_length()
        nearest = min(self.buckets, key=lambda b: (abs(b - bucket), -b))
        seconds = self.buckets[nearest].predict(n)
        return None if seconds is None else seconds + self._beyond(n, context)

    def one_token_forwards(self) -> dict[int, float]:
        """Per timed bucket, its first row count -> predicted seconds of a one-token forward over that many rows."""
        forwards = {}
        for bucket in self.buckets:
            rows = 1 << (bucket - 1)
            seconds = self.predict(rows, rows)
            if seconds is not None:
                forwards[rows] = seconds
        return forwards


class PositionAcceptance:
    """Windowed conditional acceptance per (drafter, position): counts decay by `1 - 1/window`
    per observed review, so old evidence fades. A position the planned drafter left empty counts against
    it there (so a drafter serving few rows is priced by the rows it serves), but not in the drafter's pooled
    rate over the tokens it did draft, which unseen positions borrow."""

    def __init__(self, window: int, prior: float = 0.5, strength: float = 2.0) -> None:
        self.decay = 1.0 - 1.0 / window
        self.prior = prior
        self.strength = strength
        self.reached: dict[tuple[str, int], float] = defaultdict(float)
        self.accepted: dict[tuple[str, int], float] = defaultdict(float)
        self.empty: dict[tuple[str, int], float] = defaultdict(float)

    def observe(self, origins: list[list[str]], accepted: list[int], empty: list[str | None] | None = None) -> None:
        """Row i's draft came from `origins[i]` (one drafter name a position) and its first `accepted[i]`
        tokens were accepted: each position up to the first rejection was reached, and all but that one
        accepted. `empty[i]`, when set, names the drafter planned for the position after a wholly accepted
        draft, which proposed nothing there."""
        for counts in (self.reached, self.accepted, self.empty):
            for key in counts:
                counts[key] *= self.decay
        for row_origins, count, missing in zip(origins, accepted, empty or [None] * len(origins)):
            for p, name in enumerate(row_origins[: count + 1]):
                self.reached[name, p] += 1.0
                if p < count:
                    self.accepted[name, p] += 1.0
            if missing is not None and count == len(row_origins):
                self.empty[missing, count] += 1.0

    def rates(self, drafter: str, positions: int) -> list[float]:
        """Smoothed rates at positions `0..positions-1`: each position's counts (its empty positions as
        rejections) shrunk towards the drafter's pooled rate, which itself is shrunk towards the prior."""
        reached = sum(v for (d, _), v in self.reached.items() if d == drafter)
        accepted = sum(v for (d, _), v in self.accepted.items() if d == drafter)
        pooled = (accepted + self.prior * self.strength) / (reached + self.strength)
        return [(self.accepted.get((drafter, p), 0.0) + pooled * self.strength)
                / (self.reached.get((drafter, p), 0.0) + self.empty.get((drafter, p), 0.0) + self.strength)
                for p in range(positions)]


@dataclass(frozen=True, slots=True)
class RowPace:
    """One row of a draining batch: the tokens it still needs, and `factor`, its accepted draft tokens over
    those the other rows gained from the same steps' drafts (1: the pool's pace; 0: its drafts never pay).
    A row's expected draft gain is the pool's times its factor."""

    remaining: int
    factor: float

    #: expected draft tokens of pseudo-evidence at the `prior` pace that a row starts with
    PRIOR = 1.0

    @classmethod
    def of(cls, remaining: int, gained: float, expected: float, prior: float = 1.0) -> RowPace:
        """A row that gained `gained` accepted draft tokens where its peers gained `expected`, shrunk towards
        `prior`."""
        return cls(remaining, (gained + cls.PRIOR * prior) / (expected + cls.PRIOR))


#: how fast a drafter's fill (the share of the tokens asked of it that it drafts) follows its calls
FILL_SMOOTHING = 0.1


class KController:
    """Chooses one reviewer's allocation `sizes[c]` (tokens from drafter c, `0 <= sizes[c] <= bounds[c]`).

    Invariants: the choice never exceeds the bounds; it changes only when the predicted tokens/s
    beats the current choice's by `margin`, and only after `hold_steps` unless it turns speculation
    off (the safe choice) or the batch moved to another power-of-two size (the best allocation
    depends on it); probes never change it, and a probe's predicted extra time stays within
    `probe_budget` of the time since the previous probe. While speculation is off it re-prices the
    allocations only every `hold_steps` steps, when a probe is due or when the batch moved to another
    power-of-two size (off is the safe choice; pricing every allocation was most of an idle controller's cost).
    `verify_width`, when set, is the fixed draft width the reviewer always verifies (TGI pads
    every draft to `--speculate`), so only speculation on/off changes the reviewer's cost.

    `choose` may get the batch's `pace`, a `RowPace` per row, when nothing waits to join (the engine knows;
    a server does not): the predicted rate is then the batch's remaining tokens over the predicted time until its
    slowest row finishes (one row at the pool's pace: the same as without).

    Costs: the reviewer's by the verify's shape (`rows` rows, `rows * (width + 1)` tokens, attending to the
    longest row's tokens and the draft: `choose`'s `context`, where the caller tells it; one row's width is what
    its drafters fill of their sizes, `fill`, a batch's its widest row's, the sizes' sum), each drafter's per
    drafted position by rows, and a model drafter's catch-up: the tokens its KV cache lacks after steps it was not
    called (`choose`'s `backlog`), priced by its forward over that shape. The catch-up is paid once, so an
    allocation's rate spreads it over `hold_steps` (a draining batch's: over the steps it has left), and a probe
    counts it whole; a call that caught up is not a timing of a drafted position. Acceptance is per drafter and
    position, counting a position the planned drafter left empty as a rejection, so a drafter that drafts for few
    rows is priced by the rows it serves. With seeded costs (an engine's calibration) the controller starts with
    speculation off and decides from its first step; else it drafts one token from the first drafter for
    `warmup_steps` steps.
    """

    def __init__(self, names: list[str], bounds: list[int], reviewer_cost: ShapeCost, settings: AdaptiveSettings,
                 verify_width: int | None = None, drafter_forwards: dict[str, ShapeCost] | None = None) -> None:
        self.names = names
        self.bounds = bounds
        self.reviewer_cost = reviewer_cost
        self.settings = settings
        self.verify_width = verify_width
        self.drafter_costs = {name: SizeCost() for name in names}  # seconds per drafted position, by rows
        self.drafter_forwards = drafter_forwards or {}  # a model drafter's forward cost by shape (its catch-up)
        self.fill = dict.fromkeys(names, 1.0)  # per drafter, the share of the tokens asked of it that it drafts
        self.backlog: dict[str, list[int]] = {}  # per drafter, the tokens each row's cache lacks this step
        self.context: int | None = None  # the longest row's tokens this step (None: not told)
        self._memo: dict[tuple, float | None] | None = None  # costs predicted during a `choose` (`_once`)
        self.acceptance = PositionAcceptance(settings.window_steps)
        self.candidates = [list(c) for c in itertools.product(*(range(b + 1) for b in bounds))]
        # Unseeded, start cheap: one draft token from the first drafter. Warming up at the bounds costs a
        # forward over rows x (K + 1) tokens, several plain steps' worth at a large batch.
        first = next((i for i, b in enumerate(bounds) if b), None)
        self.current = [int(i == first) for i in range(len(bounds))]
        self.chosen = self.current  # the allocation the last `choose` returned (a probe included)
        self.steps = 0
        self.held = settings.hold_steps  # the start is no choice: the first decision need not wait
        self.batch_bucket = 0  # bit length of the row count at the previous step
        self.last_probe: int | None = None  # step of the previous probe
        self.priced_at: int | None = None  # step of the previous `choose` that priced every allocation
        self.seconds_since_probe = 0.0  # predicted seconds of the steps since then

    def expected_tokens(self, sizes: list[int], rates: dict[str, list[float]] | None = None) -> float:
        """1 + expected accepted draft tokens of a draft allocated as `sizes`."""
        rates = rates or self._rates()
        total, survive, position = 1.0, 1.0, 0
        for name, k in zip(self.names, sizes):
            for _ in range(k):
                survive *= rates[name][position]
                total += survive
                position += 1
        return total

    def _rates(self) -> dict[str, list[float]]:
        depth = sum(self.bounds)
        return {name: self.acceptance.rates(name, depth) for name in self.names}

    def _once(self, key: tuple, compute: Callable[[], float | None]) -> float | None:
        """`compute()`, remembered under `key` while a `choose` prices its candidates (the costs cannot change
        meanwhile), so each cost is predicted once a step rather than once per candidate."""
        if self._memo is None:
            return compute()
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def step_seconds(self, sizes: list[int], rows: int) -> float | None:
        """Predicted seconds of one review of `rows` rows drafted as `sizes`, None while a needed cost
        is unmeasured."""
        drafted = sum(sizes)
        if self.verify_width is not None and drafted:
            width: float = self.verify_width
        elif rows == 1:  # one row's verify is as wide as its draft: what its drafters fill of their sizes
            width = sum(k * self.fill[name] for name, k in zip(self.names, sizes))
        else:  # the widest row's draft sets a batch's
            width = drafted
        window = None if self.context is None else self.context + width  # what the verify's tokens attend to
        seconds = self._once(("verify", rows, width),
                             lambda: self.reviewer_cost.predict(rows, rows * (width + 1), window))
        for name, k in zip(self.names, sizes):
            if k and seconds is not None:
                cost = self._once(("position", name, rows), lambda name=name: self.drafter_costs[name].predict(rows))
                seconds = None if cost is None else seconds + k * cost
        return seconds

    def catch_up_seconds(self, sizes: list[int]) -> float:
        """Predicted seconds the drafters of `sizes` spend feeding their caches what they lack this step (`backlog`,
        one forward over the lagging rows, as wide as the longest lag)."""
        return sum(self._once(("catch-up", name), lambda name=name: self._catch_up(name)) or 0.0
                   for name, k in zip(self.names, sizes) if k)

    def _catch_up(self, name: str) -> float:
        lags = [lag for lag in self.backlog.get(name, ()) if lag > 0]
        forward = self.drafter_forwards.get(name)
        if not lags or forward is None:
            return 0.0
        return forward.predict(len(lags), len(lags) * max(lags), self.context) or 0.0

    def predicted_rate(self, sizes: list[int], rows: int, rates: dict[str, list[float]] | None = None,
                       pace: list[RowPace] | None = None) -> float | None:
        """Predicted tokens per second for `rows` rows, None while a needed cost is unmeasured; for a draining
        batch (`pace`), its remaining tokens over the time until its slowest row is done. A catch-up is spread
        over `hold_steps`, or over the draining batch's steps."""
        seconds = self.step_seconds(sizes, rows)
        if seconds is None or seconds <= 0:
            return None
        tokens = self.expected_tokens(sizes, rates)
        catch_up = self.catch_up_seconds(sizes)
        if not pace:
            return rows * tokens / (seconds + catch_up / self.settings.hold_steps)
        steps = max(row.remaining / (1 + row.factor * (tokens - 1)) for row in pace)
        return sum(row.remaining for row in pace) / (steps * seconds + catch_up)

    def choose(self, rows: int, pace: list[RowPace] | None = None,
               backlog: dict[str, list[int]] | None = None, context: int | None = None) -> list[int]:
        """The allocation for this review of `rows` rows (`pace`: the draining batch's rows; `backlog`: per
        drafter, the tokens each row's cache lacks; `context`: the longest row's tokens; see the class)."""
        self.backlog, self.context = backlog or {}, context
        if self.steps == 0 and self.reviewer_cost.seeded:
            # priced from the start: begin with the safe choice, and probe only once probing fits the budget
            self.current, self.last_probe = [0] * len(self.bounds), 0
        self.steps += 1
        self.held += 1
        if rows.bit_length() != self.batch_bucket:
            self.batch_bucket, self.held = rows.bit_length(), max(self.held, self.settings.hold_steps)
            self.priced_at = None
        self.chosen = self._choose(rows, pace)
        return self.chosen

    def _choose(self, rows: int, pace: list[RowPace] | None) -> list[int]:
        if self.steps <= self.settings.warmup_steps and not self.reviewer_cost.seeded:
            return self.current
        if not self._resting():
            probe = self._price(rows, pace)
            if probe is not None:
                self.last_probe, self.seconds_since_probe = self.steps, 0.0
                return probe
        self.seconds_since_probe += self.step_seconds(self.current, rows) or 0.0
        return self.current

    def _price(self, rows: int, pace: list[RowPace] | None) -> list[int] | None:
        """Price every allocation and decide on them; returns the allocation to probe this step, if any."""
        self.priced_at = self.steps
        acceptance = self._rates()
        self._memo = {}
        try:
            rates = {tuple(c): self.predicted_rate(c, rows, acceptance, pace) for c in self.candidates}
        finally:
            self._memo = None
        unmeasured = [list(c) for c, rate in rates.items() if rate is None]
        known = {c: rate for c, rate in rates.items() if rate is not None}
        probe = self._probe(unmeasured, known, rows)
        if probe is None:
            self._decide(known)
        return probe

    def _resting(self) -> bool:
        """Speculation is off, priced fewer than `hold_steps` steps ago, and no probe is due: keep it off unpriced."""
        probe_due = self.last_probe is None or self.steps - self.last_probe >= self.settings.probe_every
        return (not any(self.current) and not probe_due and self.priced_at is not None
                and self.steps - self.priced_at < self.settings.hold_steps)

    def _decide(self, known: dict[tuple[int, ...], float]) -> None:
        if not known:
            return
        if self.held >= self.settings.hold_steps:
            choice = max(known, key=lambda c: (known[c], -sum(c)))
        else:  # held: only turning speculation off, the safe choice, may replace the current allocation now
            choice = (0,) * len(self.bounds)
        current = known.get(tuple(self.current))
        if choice in known and list(choice) != self.current and (
                current is None or known[choice] > current * (1 + self.settings.margin)):
            self.current, self.held = list(choice), 0

    def _probe(self, unmeasured: list[list[int]], known: dict[tuple[int, ...], float], rows: int) -> list[int] | None:
        """The allocation to probe this step, None when no probe is due. Right after warmup and then
        at most every `probe_every` steps: an unmeasured allocation first, else speculation off while
        on, or the best speculative allocation while off, once its predicted extra time over the
        current choice fits `probe_budget`."""
        if self.last_probe is not None and self.steps - self.last_probe < self.settings.probe_every:
            return None
        if unmeasured:
            return unmeasured[0]
        if any(self.current):
            probe = [0] * len(self.bounds)
        else:
            speculative = {c: r for c, r in known.items() if any(c)}
            if not speculative:
                return None
            probe = list(max(speculative, key=speculative.get))
        current_rate = known.get(tuple(self.current))
        if self.last_probe is not None and current_rate:
            # the probe's time beyond what its expected tokens would take at the current rate
            extra = self.step_seconds(probe, rows) * (1 - known[tuple(probe)] / current_rate)
            if extra + self.catch_up_seconds(probe) > self.settings.probe_budget * self.seconds_since_probe:
                return None
        return probe

    def observe_review(self, origins: list[list[str]], accepted: list[int], asked: list[int] | None = None) -> None:
        """Row i drafted `origins[i]` (its drafters' names) of the `asked[i]` tokens it was asked for (default:
        all of them), and its first `accepted[i]` were accepted; the allocation was the last `choose`'s."""
        empty = None
        if asked is not None:
            planned = [name for name, k in zip(self.names, self.chosen) for _ in range(k)]
            empty = [planned[len(o)] if len(o) < min(n, len(planned)) else None for o, n in zip(origins, asked)]
        self.acceptance.observe(origins, accepted, empty)

    def observe_call(self, name: str, rows: int, positions: int, seconds: float,
                     asked: int = 0, drafted: int = 0) -> None:
        """A call of drafter `name` for `rows` rows, at most `positions` tokens each, took `seconds` (ignored when
        it caught up more than a step's tokens: its forward's shape prices that) and drafted `drafted` of the
        `asked` tokens asked of it in all (MaG without a match, a drafter below its `min_confidence` draft fewer)."""
        caught_up = max(self.backlog.get(name, ()), default=0) > sum(self.bounds) + 1
        if rows and positions and not caught_up:
            self.drafter_costs[name].observe(rows, seconds / positions)
        if asked:
            self.fill[name] += FILL_SMOOTHING * (drafted / asked - self.fill[name])

    def seed_drafter(self, name: str, forward: ShapeCost | None) -> None:
        """Price drafter `name` before it is called: a model drafter's position like its calibrated one-token
        forward over as many rows (`forward`), a statistical one as free (its first call replaces either)."""
        costs = self.drafter_costs[name]
        for rows, seconds in (forward.one_token_forwards() if forward is not None else {1: 0.0}).items():
            costs.seed(rows, seconds)
