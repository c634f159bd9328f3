"""Adaptive k: the cost model's pieces, the controller's choices and hysteresis, and exact engines."""

import itertools

import pytest
import torch

from helpers import FakeClock, StatelessDrafter, StubTokenizer, build_engine
from tgi_csd import clock
from tgi_csd.adaptive import KController, PositionAcceptance, RowPace, ShapeCost, SizeCost
from tgi_csd.builder import ModelLevel
from tgi_csd.config import AdaptiveSettings, parse_config
from tgi_csd.drafters.base import Proposal
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.engine import Engine, Request
from tgi_csd.models import cut_from_target
from tgi_csd.reference import Agreement, compare, reference_generate
from tgi_csd.runner import ModelRunner

PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3], [7, 8, 9], [40, 41, 42, 40, 41], [3, 3, 3, 3, 3, 3, 3, 3], [9, 8, 7, 6, 5]]
TOLERANCE = 1e-4  # near-tie: top-2 logit gap of the reference below this
SETTINGS = AdaptiveSettings(warmup_steps=0, hold_steps=1, probe_every=1000, margin=0.05)


def test_size_cost_interpolates_and_extrapolates():
    cost = SizeCost(smoothing=0.5)
    assert cost.predict(4) is None
    cost.observe(4, 1.0)
    assert cost.predict(40) == 1.0  # one point: flat
    cost.observe(8, 2.0)
    assert cost.predict(6) == pytest.approx(1.5)
    assert cost.predict(12) == pytest.approx(3.0)
    assert cost.predict(0) == pytest.approx(0.0)
    cost.observe(8, 4.0)  # moving average, not the last value
    assert cost.predict(8) == pytest.approx(3.0)


def test_size_cost_never_predicts_a_bigger_call_cheaper():
    cost = SizeCost(smoothing=0.5)
    for n, seconds in [(4, 1.0), (8, 2.0), (12, 1.2), (16, 3.0)]:  # 12 was timed on a lucky moment
        cost.observe(n, seconds)
    predictions = [cost.predict(n) for n in range(1, 24)]
    assert predictions == sorted(predictions)
    assert cost.predict(8) == cost.predict(12) == pytest.approx(1.6)  # pooled, each size weighted alike
    assert cost.predict(4) == 1.0 and cost.predict(16) == 3.0
    cost.observe(12, 1.2)  # more evidence for the low value pulls the pool down
    assert cost.predict(8) < 1.6


def test_a_seed_prices_a_size_until_it_is_seen_live():
    cost = SizeCost(smoothing=0.5)
    cost.seed(4, 1.0)
    cost.seed(8, 2.0)
    assert cost.seeded and cost.predict(6) == pytest.approx(1.5)
    cost.observe(8, 5.0)  # the first live timing replaces the seed, it is not averaged with it
    assert cost.predict(8) == pytest.approx(5.0)
    cost.seed(8, 2.0)  # a seed never overrides what was seen live
    assert cost.predict(8) == pytest.approx(5.0)


def test_seeds_follow_the_live_timings_of_seeded_sizes():
    """Live steps run on a busier (or idler) machine than the calibration: a size not yet seen live keeps its
    calibrated ratio to the sizes that were, instead of looking cheap beside them; the drift follows those sizes'
    live averages, so an odd first timing (the step after a prefill) fades from it."""
    cost = SizeCost(smoothing=0.5)
    for n, seconds in ((4, 1.0), (8, 1.2), (16, 2.0)):
        cost.seed(n, seconds)
    cost.observe(4, 1.5)
    assert cost.drift == pytest.approx(1.5)
    assert cost.predict(8) == pytest.approx(1.8) and cost.predict(16) == pytest.approx(3.0)
    cost.observe(4, 0.9)  # the size's average (1.2) moves the drift with it
    assert cost.drift == pytest.approx(1.2)
    cost.observe(8, 1.2)  # the next seeded size seen live: weighted by observations, (2 * 1.2 + 1 * 1.0) / 3
    assert cost.drift == pytest.approx(3.4 / 3) and cost.predict(16) == pytest.approx(2 * 3.4 / 3)


def test_attention_prices_a_forward_at_the_context_asked():
    """A calibration at two contexts says how attention grows with it: a timing at one context prices another,
    wider shapes growing faster, and a live timing at a long context moves the short-context price only by
    what is not attention."""
    per_position = 1e-5  # seconds per token fed per position attended
    def timed(n, context):
        return 0.08 + 0.003 * n + per_position * n * context
    timings = [(4, n, c, timed(n, c)) for n in (4, 8) for c in (68, 324)]
    cost = ShapeCost()
    cost.fit_attention(timings)
    for rows, n, context, seconds in timings:
        cost.seed(rows, n, seconds, context)
    assert cost.attention == pytest.approx(per_position) and cost.context == 68
    for n, context in ((4, 200), (8, 200), (8, 500)):
        assert cost.predict(4, n, context) == pytest.approx(timed(n, context))
    assert cost.predict(4, 8, 400) / cost.predict(4, 4, 400) > cost.predict(4, 8, 100) / cost.predict(4, 4, 100)
    cost.observe(4, 4, timed(4, 400), 400)
    assert cost.predict(4, 4, 100) == pytest.approx(timed(4, 100))
    flat = ShapeCost()  # never calibrated at two contexts: the context changes nothing
    flat.fit_attention([(4, 4, 68, 0.1)])
    flat.seed(4, 4, 0.1, 68)
    assert flat.attention == 0 and flat.predict(4, 4, 1000) == flat.predict(4, 4) == pytest.approx(0.1)


def test_shape_cost_prices_each_row_bucket_apart_and_borrows_the_nearest():
    cost = ShapeCost()
    assert cost.predict(1, 8) is None and not cost.seeded
    cost.seed(1, 8, 1.0)  # one row of 8 tokens
    cost.seed(4, 8, 1.5)  # four rows of 2: dearer
    assert cost.seeded
    assert cost.predict(1, 8) == 1.0 and cost.predict(4, 8) == 1.5 and cost.predict(7, 8) == 1.5
    assert cost.predict(2, 8) == 1.5, "a tie between buckets goes to the larger, the dearer"
    assert cost.predict(64, 8) == 1.5, "past the timed buckets: the largest"
    cost.observe(5, 8, 3.0)
    assert cost.predict(4, 8) == 3.0 and cost.predict(1, 8) == 1.0


def test_position_acceptance_is_conditional_and_windowed():
    acceptance = PositionAcceptance(window=20)
    for _ in range(100):  # position 0 always accepted, position 1 never (given 0 was)
        acceptance.observe([["mag", "mag", "mag"]], [1])
    rates = acceptance.rates("mag", 3)
    assert rates[0] > 0.9 and rates[1] < 0.1
    assert 0.1 < rates[2] < 0.9, "position 2 was never reached: it borrows the pooled rate"
    for _ in range(100):  # the workload shifts: everything accepted
        acceptance.observe([["mag", "mag", "mag"]], [3])
    assert min(acceptance.rates("mag", 3)) > 0.9, "old evidence did not fade"


def controller(slope: float, rate: float, bounds=(6,), drafter_cost: float = 0.0,
               settings: AdaptiveSettings = SETTINGS) -> KController:
    """A controller whose reviewer costs `1 + slope * n` seconds for n tokens, whose drafters cost
    `drafter_cost` per drafted token and are accepted with probability `rate` at every position."""
    cost = ShapeCost()
    for n in (4, 16, 64):
        cost.observe(1, n, 1.0 + slope * n)  # every batch borrows the one-row bucket
    names = [f"d{i}" for i in range(len(bounds))]
    ctl = KController(names, list(bounds), cost, settings)
    for name in names:
        for n in (1, 100):
            ctl.observe_call(name, n, 1, drafter_cost)
    ctl.acceptance = _exact(names, rate, sum(bounds))
    ctl.steps = ctl.last_probe = 1  # past the probe right after warmup
    return ctl


def _exact(names, rate, depth):
    acceptance = PositionAcceptance(window=10**6, strength=1e-9)
    for name in names:
        for p in range(depth):
            acceptance.reached[name, p] = 1000.0
            acceptance.accepted[name, p] = 1000.0 * rate
    return acceptance


def test_cheap_verification_drafts_long_expensive_turns_speculation_off():
    assert controller(slope=0.0, rate=0.8).choose(rows=1) == [6]
    assert controller(slope=1.0, rate=0.3).choose(rows=16) == [0], "verification costs more than it saves"
    middle = controller(slope=0.02, rate=0.6).choose(rows=4)
    assert 0 < middle[0] < 6


def test_one_rows_verify_is_priced_as_wide_as_its_drafters_fill():
    """A drafter that drafts half of what it is asked (MaG without a match, a confidence cut) makes one row's
    verify half as wide as its size, not a batch's (the widest row's draft sets it)."""
    ctl = controller(slope=0.1, rate=0.5)
    full = ctl.step_seconds([6], 1)
    for _ in range(200):
        ctl.observe_call("d0", 1, 6, 0.0, asked=6, drafted=3)
    assert ctl.fill["d0"] == pytest.approx(0.5)
    assert full == pytest.approx(1 + 0.1 * 7)
    assert ctl.step_seconds([6], 1) == pytest.approx(1 + 0.1 * 4), "a verify of 3 draft tokens"
    assert ctl.step_seconds([6], 4) == pytest.approx(ctl.reviewer_cost.predict(4, 4 * 7))


def test_expensive_drafter_gets_fewer_positions():
    cheap = controller(slope=0.0, rate=0.5, bounds=(4,), drafter_cost=0.0).choose(rows=1)
    dear = controller(slope=0.0, rate=0.5, bounds=(4,), drafter_cost=0.5).choose(rows=1)
    assert dear[0] < cheap[0]


def test_hysteresis_keeps_a_choice_within_the_margin():
    ctl = controller(slope=0.0, rate=0.5)
    ctl.current = [5]  # [6] predicts under 1% more tokens/s: stay
    assert ctl.choose(rows=1) == [5]
    ctl.acceptance = _exact(["d0"], 0.9, 6)  # now [6] predicts 11% more: switch
    assert ctl.choose(rows=1) == [6]
    ctl.acceptance = _exact(["d0"], 0.05, 6)
    ctl.reviewer_cost.observe(1, 4, 50.0)  # verification now costs far more per token drafted
    ctl.reviewer_cost.observe(1, 16, 200.0)
    assert ctl.choose(rows=1) != [6]


def test_hold_steps_delay_a_switch_but_not_turning_speculation_off():
    ctl = controller(slope=0.0, rate=0.8, settings=AdaptiveSettings(warmup_steps=0, hold_steps=3, probe_every=1000))
    assert ctl.choose(rows=1) == [6], "the first decision does not wait"
    ctl.current, ctl.held = [0], 0  # as if 'off' had just been chosen
    assert [ctl.choose(rows=1) for _ in range(3)] == [[0], [0], [6]]
    ctl.acceptance = _exact(["d0"], 0.0, 6)
    ctl.observe_call("d0", 1, 6, 600.0)  # drafting now costs far more than it saves
    assert ctl.choose(rows=1) == [0], "off at once, although [6] was chosen a step ago"


def test_while_held_a_choice_worse_than_off_turns_off_at_once():
    """The best allocation must wait for the hold, but the current one predicts less than no speculation:
    off, the safe choice, does not wait."""
    ctl = controller(slope=0.3, rate=0.5, settings=AdaptiveSettings(warmup_steps=0, hold_steps=8, probe_every=1000))
    ctl.current, ctl.held, ctl.batch_bucket = [6], 0, 1  # [6] just chosen, at this batch size
    rates = {k: ctl.predicted_rate([k], 1) for k in (0, 1, 6)}
    assert rates[1] > rates[0] > rates[6], "the setting: [1] is best, [6] worse than off"
    assert ctl.choose(rows=1) == [0]


def test_a_draining_batch_is_priced_by_its_slowest_row():
    """Nothing waits to join, so the batch ends with its slowest row. Per row a draft pays; but a row whose
    drafts never pay (pace 0) and that is as far from done as the others decides when the batch ends, so
    speculation is off. Once that row is well ahead of the others, it no longer decides, and drafts pay again."""
    assert controller(slope=0.02, rate=0.6).choose(rows=4)[0] > 0
    lagging = [RowPace(30, 1.0)] * 3 + [RowPace(30, 0.0)]
    assert controller(slope=0.02, rate=0.6).choose(rows=4, pace=lagging) == [0]
    ahead = [RowPace(30, 1.0)] * 3 + [RowPace(10, 0.0)]
    assert controller(slope=0.02, rate=0.6).choose(rows=4, pace=ahead)[0] > 0
    assert controller(slope=0.1, rate=0.6).choose(rows=1, pace=[RowPace(30, 0.0)]) == [0], "the last row, a laggard"
    for k in range(7):
        ctl = controller(slope=0.02, rate=0.6)
        assert ctl.predicted_rate([k], 1, pace=[RowPace(30, 1.0)]) == pytest.approx(ctl.predicted_rate([k], 1)), \
            "one row at the pool's pace: priced as without"


def test_a_rows_pace_is_its_gain_against_what_was_expected():
    assert RowPace.of(5, gained=0, expected=0).factor == 1.0, "no evidence: the pool's pace"
    assert RowPace.of(5, gained=0, expected=9.5).factor == pytest.approx(RowPace.PRIOR / (9.5 + RowPace.PRIOR))
    assert RowPace.of(5, gained=20, expected=10).factor > 1.0


def test_probes_measure_the_alternative_without_switching():
    ctl = controller(slope=1.0, rate=0.3, settings=AdaptiveSettings(warmup_steps=0, hold_steps=1, probe_every=4,
                                                                     probe_budget=1.0))
    ctl.steps, ctl.last_probe = 0, None
    choices = [ctl.choose(rows=16) for _ in range(8)]
    assert choices[:4] == [[0]] * 4 and choices[5:] == [[0]] * 3, "the first step after warmup probes 'off'"
    assert choices[4] != [0], "while off, every 4th step probes speculation"
    assert ctl.current == [0]


def test_while_off_the_controller_prices_only_every_hold_steps():
    """Off, with no probe due and the batch's size unchanged, a step keeps off without pricing any allocation;
    every `hold_steps` steps it prices them all, and takes up speculation once it pays."""
    ctl = controller(slope=1.0, rate=0.3, settings=AdaptiveSettings(warmup_steps=0, hold_steps=4, probe_every=1000))
    priced = []
    price = ctl.predicted_rate

    def spy(*args, **kwargs):
        priced.append(ctl.steps)
        return price(*args, **kwargs)

    ctl.predicted_rate = spy
    assert [ctl.choose(rows=16) for _ in range(10)] == [[0]] * 10  # steps 2-11
    assert sorted(set(priced)) == [2, 6, 10], "a new batch size prices at once, then every 4th step"
    flat = ShapeCost()
    for n in (4, 16, 64):
        flat.observe(1, n, 1.0)  # verifying is now free: drafts pay
    ctl.reviewer_cost = flat
    assert [ctl.choose(rows=16) != [0] for _ in range(3)] == [False, False, True], "taken up at the next pricing"
    assert ctl.choose(rows=16) != [0] and priced[-1] == ctl.steps, "speculating: priced every step"


def test_a_new_batch_size_is_decided_at_once_despite_the_hold():
    ctl = controller(slope=0.1, rate=0.8, settings=AdaptiveSettings(warmup_steps=0, hold_steps=8, probe_every=1000))
    assert ctl.choose(rows=256) == [0], "verifying 256 x (k + 1) tokens does not pay"
    assert ctl.choose(rows=1)[0] >= 3, "one row: speculation pays, and the hold must not keep 'off'"
    ctl.current, ctl.held = [0], 0
    assert ctl.choose(rows=1) == [0], "same batch size: the hold applies"


def test_probes_at_a_large_batch_fit_the_budget():
    budget = 0.02
    ctl = controller(slope=1.0, rate=0.3, settings=AdaptiveSettings(warmup_steps=0, hold_steps=1, probe_every=4,
                                                                     probe_budget=budget))
    choices = [ctl.choose(rows=16) for _ in range(400)]
    probes = [i for i, c in enumerate(choices) if c != [0]]
    off_seconds = ctl.step_seconds([0], 16)
    extra = ctl.step_seconds([1], 16) - 16 * ctl.expected_tokens([1]) / ctl.predicted_rate([0], 16)
    assert len(probes) >= 5, "speculation is still probed now and then"
    assert min(b - a for a, b in itertools.pairwise(probes)) >= extra / (budget * off_seconds)


def test_a_position_left_empty_counts_as_rejected():
    """A drafter that drafts for one row in four is priced by the rows it serves: its acceptance, counted
    over the positions planned for it, is a quarter of what its drafts alone would say."""
    ctl = controller(slope=0.0, rate=0.5, bounds=(1,))
    ctl.acceptance = PositionAcceptance(window=10**6, strength=1e-9)
    ctl.chosen = [1]
    for _ in range(50):
        ctl.observe_review([["d0"], [], [], []], [1, 0, 0, 0], asked=[1, 1, 1, 1])
    assert ctl.acceptance.rates("d0", 1)[0] == pytest.approx(0.25)
    ctl.observe_review([[]], [0], asked=[0])  # asked for nothing (its last token): no evidence
    assert ctl.acceptance.rates("d0", 1)[0] == pytest.approx(0.25, abs=1e-3)


def test_a_seeded_controller_starts_off_and_decides_from_its_first_step():
    """Calibrated costs: no warmup draft. Where verification is dear (a large batch) the first step is plain
    decoding; where it is cheap (one row) the first step already speculates."""
    for rows, speculates in ((256, False), (1, True)):
        cost = ShapeCost()
        for n in (1, 16, 256, 1024):
            cost.seed(1, n, 1.0 + 0.1 * n)
        ctl = KController(["d0"], [4], cost, AdaptiveSettings(warmup_steps=5))
        ctl.seed_drafter("d0", None)
        ctl.acceptance = _exact(["d0"], 0.8, 4)
        assert bool(ctl.choose(rows)[0]) is speculates, rows


def test_a_model_drafters_catch_up_is_spread_over_the_hold_and_keeps_it_off_where_it_does_not_pay():
    cost = ShapeCost()
    for n in (1, 2, 3, 4, 5):
        cost.seed(1, n, 0.10 + 0.01 * n)  # the target: 100 ms + 10 ms a token
    forward = ShapeCost()
    for n in (1, 64):
        forward.seed(1, n, 0.01 + 0.001 * n)  # the drafter's forward: 10 ms + 1 ms a token

    def controller():
        ctl = KController(["d0"], [4], cost, AdaptiveSettings(hold_steps=4), drafter_forwards={"d0": forward})
        ctl.seed_drafter("d0", forward)
        ctl.acceptance = _exact(["d0"], 0.8, 4)
        return ctl

    synced = controller()
    assert synced.choose(1, backlog={"d0": [1]}) == [4]  # one token behind: drafting pays
    behind = controller()
    assert behind.choose(1, backlog={"d0": [2000]}) == [0]  # 2 s of catch-up: not within 4 steps' gain
    assert behind.catch_up_seconds([4]) == pytest.approx(forward.predict(1, 2000))
    assert behind.catch_up_seconds([0]) == 0.0
    tokens = behind.expected_tokens([4])
    assert behind.predicted_rate([4], 1) == pytest.approx(
        tokens / (behind.step_seconds([4], 1) + forward.predict(1, 2000) / 4))
    drained = [RowPace(3, 1.0)]  # a draining batch pays the catch-up over the steps it has left
    steps = 3 / tokens
    assert behind.predicted_rate([4], 1, pace=drained) == pytest.approx(
        3 / (steps * behind.step_seconds([4], 1) + forward.predict(1, 2000)))
    # a call that caught up is no timing of a drafted position; a steady one is
    behind.observe_call("d0", 1, 4, 9.0)
    assert behind.drafter_costs["d0"].counts == {1: 0}
    behind.choose(1, backlog={"d0": [1]})
    behind.observe_call("d0", 1, 4, 0.08)
    assert behind.drafter_costs["d0"].predict(1) == pytest.approx(0.02)


class WrongDrafter(StatelessDrafter):
    """Always proposes a token the tiny target never picks next (so nothing is accepted); each call costs
    `seconds_per_token` of fake time per token asked (a model drafter's forwards)."""

    name = "wrong"

    def __init__(self, vocab: int, clock: FakeClock | None = None, seconds_per_token: float = 0.0) -> None:
        self.vocab = vocab
        self.clock = clock
        self.seconds_per_token = seconds_per_token

    def propose(self, rows, seqs, counts):
        if self.clock is not None:
            self.clock.advance(self.seconds_per_token * sum(counts))
        return Proposal([[(seq[len(seq) - 1] + 31) % self.vocab] * k for seq, k in zip(seqs, counts)])


class SlowPerToken(torch.nn.Module):
    """The target, plus `fixed` + `per_token` (3 ms) of (fake) time per token fed: verification cost grows with
    the draft length, as on a real model, instead of the tiny model's flat Python overhead."""

    def __init__(self, model, clock: FakeClock, fixed: float = 0.0, per_token: float = 0.003,
                 per_position: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.clock = clock
        self.fixed = fixed
        self.per_token = per_token
        self.per_position = per_position  # per token fed per position it attends to (the attention window)
        self.config = model.config
        self.dtype = model.dtype
        self.device = model.device
        self.forward = self._forward

    def _forward(self, input_ids, **kwargs):
        window = kwargs["attention_mask"].shape[-1]
        self.clock.advance(self.fixed + (self.per_token + self.per_position * window) * input_ids.numel())
        return self.model(input_ids=input_ids, **kwargs)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()


def test_useless_drafter_is_switched_off_and_outputs_stay_exact(target):
    fake = FakeClock()
    runner = ModelRunner(target, "target")
    runner.model = SlowPerToken(target, fake)
    engine = Engine.assemble(runner, [WrongDrafter(64)], [[4]], StubTokenizer(None),
                             adaptive=AdaptiveSettings(warmup_steps=2, hold_steps=2, probe_every=8))
    with clock.use(fake):
        results = engine.generate([Request(prompt_ids=p, max_new_tokens=40) for p in PROMPTS[:2]])
    for prompt, result in zip(PROMPTS, results):
        agreement, _ = compare(result.token_ids, reference_generate(target, prompt, 40, None), TOLERANCE)
        assert agreement is not Agreement.MISMATCH
    report = engine.report()
    assert report["speculation_off_steps"] >= report["steps"] // 2
    assert engine.top.controller.current == [0]


def test_calibration_seeds_the_cost_at_each_shape_and_leaves_no_trace(target):
    fake = FakeClock()
    runner = ModelRunner(target, "target")
    runner.model = SlowPerToken(target, fake, fixed=0.01)
    with clock.use(fake):
        runner.calibrate(shapes=[(1, 1), (1, 4), (1, 16), (4, 1), (4, 4)], context=8)
    assert runner.cost.seeded
    assert {b: c.counts for b, c in runner.cost.buckets.items()} == {1: {1: 0, 4: 0, 16: 0}, 3: {4: 0, 16: 0}}
    for rows, n in ((1, 1), (1, 4), (1, 16), (4, 4), (4, 16)):
        assert runner.cost.predict(rows, n) == pytest.approx(0.01 + 0.003 * n)
    assert runner.forwards == 0 and runner.forward_seconds == 0 and runner.cache.batch_size == 0


def test_calibration_prices_the_attention_a_longer_context_adds(target):
    fake = FakeClock()
    runner = ModelRunner(target, "target")
    runner.model = SlowPerToken(target, fake, fixed=0.01, per_position=1e-5)
    with clock.use(fake):
        timings = runner.calibrate(shapes=[(1, 1), (1, 8), (4, 1), (4, 2), (4, 4)], context=8, long_context=40)
    assert {window for _, _, window, _ in timings} == {9, 10, 12, 16, 41, 42, 44, 48}, "each shape at both contexts"
    assert runner.cost.attention == pytest.approx(1e-5)
    for rows, n, window in ((1, 1, 300), (4, 8, 300), (4, 16, 500)):
        assert runner.cost.predict(rows, n, window) == pytest.approx(0.01 + (0.003 + 1e-5 * window) * n)


def test_a_verify_that_pays_after_a_short_context_does_not_after_a_long_one():
    """The same batch and acceptance: speculation on while the rows are short, off once attention over long
    rows makes the wider verify dear (the context the cascade tells the controller)."""
    cost = ShapeCost()
    timings = [(4, 4 * w, c + w, 0.08 + (0.002 + 2e-5 * (c + w)) * 4 * w) for w in (1, 2, 3) for c in (64, 320)]
    cost.fit_attention(timings)
    for rows, n, window, seconds in timings:
        cost.seed(rows, n, seconds, window)
    ctl = KController(["mag"], [2], cost, SETTINGS)
    ctl.seed_drafter("mag", None)
    ctl.acceptance = _exact(["mag"], 0.35, 2)
    assert ctl.choose(4, context=100) != [0]
    assert ctl.choose(4, context=3000) == [0]


def test_an_engine_given_an_earlier_calibration_prices_alike_without_timing_again(target):
    fake = FakeClock()

    def build(calibration=None):
        runner = ModelRunner(target, "target")
        runner.model = SlowPerToken(target, fake, fixed=0.01)
        return Engine.assemble(runner, [MaGDrafter(None)], [[4]], StubTokenizer(None), adaptive=AdaptiveSettings(),
                               calibration=calibration)

    with clock.use(fake):
        first = build()
        timed = fake()
        second = build(first.calibration)
        assert fake() == timed, "no forward was timed"
    assert first.calibration["target"] and second.calibration == first.calibration
    for rows, n in ((1, 1), (4, 12), (16, 32)):
        assert second.target.cost.predict(rows, n) == first.target.cost.predict(rows, n) is not None


def test_a_model_drafters_position_is_priced_by_its_one_token_forward_over_as_many_rows():
    forward = ShapeCost()
    forward.seed(1, 1, 0.02)
    forward.seed(1, 4, 0.03)  # one row of 4 tokens: not what drafting one position for 4 rows costs
    forward.seed(4, 4, 0.05)
    forward.seed(4, 8, 0.07)
    ctl = KController(["d0", "mag"], [2, 2], forward, SETTINGS)
    ctl.seed_drafter("d0", forward)
    ctl.seed_drafter("mag", None)
    assert ctl.drafter_costs["d0"].points == {1: 0.02, 4: 0.05}
    assert ctl.drafter_costs["mag"].predict(16) == 0.0


def timed_run(target, drafters, k_matrix, prompts, tokens, adaptive=None, fixed=0.02):
    """Fake seconds an engine over `drafters` takes to serve `prompts` in one batch (a target costing `fixed`
    (20 ms) + 3 ms a token fed, as a CPU forward does), and its outputs."""
    fake = FakeClock()
    runner = ModelRunner(target, "target")
    runner.model = SlowPerToken(target, fake, fixed=fixed)
    drafters = [WrongDrafter(64, fake, 0.002) if d == "wrong" else d for d in drafters]
    with clock.use(fake):
        engine = Engine.assemble(runner, drafters, k_matrix, StubTokenizer(None), adaptive=adaptive)
        start = fake()
        results = engine.generate([Request(prompt_ids=p, max_new_tokens=tokens, ignore_eos=True) for p in prompts])
    return fake() - start, [r.token_ids for r in results]


def test_a_drafter_that_is_never_accepted_costs_csd_adaptive_under_5_percent_against_mag_alone(target):
    """The cascade never loses to its cheapest level: the adaptive controller prices the useless drafter from
    what it measures and drops it, so the cascade over it and MaG serves (fake) time within 5% of MaG alone."""
    prompts = PROMPTS[:2]
    mag_alone, reference = timed_run(target, [MaGDrafter(None)], [[4]], prompts, 40)
    cascade, outputs = timed_run(target, ["wrong", MaGDrafter(None)], [[4, 4]], prompts, 40, AdaptiveSettings())
    assert outputs == reference
    assert cascade <= 1.05 * mag_alone, (cascade, mag_alone)


def test_csd_adaptive_never_loses_to_no_speculation_at_a_large_batch_from_its_first_steps(target):
    """16 rows x 32 tokens, where verifying drafts costs more than the drafts gain: calibrated, the controller
    starts off and stays within 2% of plain decoding (static speculation loses far more)."""
    prompts = [[(7 * i + j) % 60 + 2 for j in range(6)] for i in range(16)]
    nospec, reference = timed_run(target, [], [[]], prompts, 32)
    static, _ = timed_run(target, ["wrong", MaGDrafter(None)], [[2, 2]], prompts, 32)
    adaptive, outputs = timed_run(target, ["wrong", MaGDrafter(None)], [[2, 2]], prompts, 32, AdaptiveSettings())
    assert outputs == reference
    assert static > 1.2 * nospec, "the test's costs make speculation lose at this batch"
    assert adaptive <= nospec / 0.98, (adaptive, nospec)


class OracleDrafter(StatelessDrafter):
    """Drafts the target's own greedy continuation (`references`: prompt -> tokens) for the prompts in `good`,
    a token the target never picks for the others."""

    name = "oracle"

    def __init__(self, references: dict[tuple[int, ...], list[int]], good: set[tuple[int, ...]], vocab: int = 64):
        self.references = references
        self.good = good
        self.vocab = vocab

    def propose(self, rows, seqs, counts):
        drafts = []
        for seq, k in zip(seqs, counts):
            history = seq.suffix(0)
            prompt = next(p for p in self.references if tuple(history[:len(p)]) == p)
            whole = [*prompt, *self.references[prompt]]
            right = prompt in self.good and whole[:len(history)] == history
            drafts.append(whole[len(history):len(history) + k] if right else [(history[-1] + 31) % self.vocab] * k)
        return Proposal(drafts)


def test_a_batch_whose_slowest_row_gains_nothing_costs_csd_adaptive_under_3_percent(target):
    """Four rows x 32 tokens, nothing waiting: three rows' drafts are always right, one row's never. Per row,
    drafting pays (three quarters of the rows take 5 tokens a step), but the batch ends with the row that takes
    one, so plain decoding is the fastest way through it: static speculation loses over 10%; csd-adaptive, with
    no earlier request to say which row will lag, spends its first steps learning each row's pace (and the
    lagging row's last steps alone confirming it) and stays within 3%."""
    prompts = [tuple((5 * i + j) % 60 + 2 for j in range(5 + i)) for i in range(4)]
    references = {p: reference_generate(target, list(p), 32, None).token_ids for p in prompts}
    oracle = OracleDrafter(references, set(prompts[:3]))
    batch = [list(p) for p in prompts]
    nospec, reference = timed_run(target, [], [[]], batch, 32, fixed=0.05)
    static, _ = timed_run(target, [oracle], [[4]], batch, 32, fixed=0.05)
    adaptive, outputs = timed_run(target, [oracle], [[4]], batch, 32, AdaptiveSettings(), fixed=0.05)
    assert outputs == reference
    assert static > 1.1 * nospec, "the test's costs make speculation lose in this batch"
    assert adaptive <= nospec / 0.97, (adaptive, nospec)


@pytest.mark.parametrize("layout", ["mag", "csd"])
def test_adaptive_engines_equal_the_target_alone(target, layout):
    engine = build_engine(target, layout, adaptive=AdaptiveSettings(warmup_steps=1, hold_steps=1, probe_every=3))
    rows = [engine.top, *[d.below for d in engine.drafters if isinstance(d, ModelDrafter)]]
    assert all(row.controller is not None for row in rows)
    results = engine.generate([Request(prompt_ids=p, max_new_tokens=24) for p in PROMPTS])
    for prompt, result in zip(PROMPTS, results):
        agreement, position = compare(result.token_ids, reference_generate(target, prompt, 24, None), TOLERANCE)
        assert agreement is not Agreement.MISMATCH, f"{layout}: prompt {prompt} differs at {position}"
    assert engine.report()["generated_tokens"] == 24 * len(PROMPTS)


def test_drafter_cache_is_consistent_when_speculation_resumes(target):
    """Off for a stretch (the drafter is not called), then on: the drafter's proposals are again
    exactly its own greedy continuation, so its KV cache caught up with the history."""
    draft_model = cut_from_target(target, 2)
    engine = Engine.assemble(ModelRunner(target, "target"), [ModelLevel("d2", ModelRunner(draft_model, "d2")),
                                                              MaGDrafter(None)], [[3, 0], [0, 2]], StubTokenizer(None))
    drafter = engine.drafters[0]
    schedule = iter([[3, 0]] * 3 + [[0, 0]] * 6 + [[3, 0]] * 100)

    class Scripted:
        def choose(self, rows, pace=None, backlog=None, context=None):
            return next(schedule)

        def observe_call(self, *args):
            pass

        def observe_review(self, *args):
            pass

    engine.top.steer(Scripted())
    proposals = []
    original = drafter.propose

    def spy(rows, seqs, counts):
        out = original(rows, seqs, counts)
        proposals.append(([seqs[i].suffix(0) for i in range(len(rows))], out.tokens))
        return out

    drafter.propose = spy
    engine.generate([Request(prompt_ids=p, max_new_tokens=30) for p in PROMPTS[:3]])
    assert engine.report()["speculation_off_steps"] == 6
    assert len(proposals) > 6
    for histories, tokens in proposals[3:]:  # every call after the off stretch
        for history, draft in zip(histories, tokens):
            with torch.inference_mode():
                expected = draft_model.generate(torch.tensor([history]), max_new_tokens=len(draft),
                                                min_new_tokens=len(draft), do_sample=False, pad_token_id=0)
            assert draft == expected[0, len(history):].tolist()


def test_adaptive_config_section():
    config = parse_config({"target": {"model": "m"}, "drafters": [{"type": "mag"}], "k_matrix": [[6]],
                           "adaptive": {"margin": 0.1}})
    assert config.adaptive.margin == 0.1 and config.adaptive.hold_steps == 8
    with pytest.raises(Exception, match="adaptive.hold_steps"):
        parse_config({"target": {"model": "m"}, "drafters": [{"type": "mag"}], "k_matrix": [[6]],
                      "adaptive": {"hold_steps": 0}})

