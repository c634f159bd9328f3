"""The batched CS Drafting engine: continuous batching, one exact target verification per step."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from tgi_csd import clock
from tgi_csd.builder import DrafterAssets, Level, build_session, compose
from tgi_csd.config import AdaptiveSettings, CascadeConfig
from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.cascade import Draft, HorizontalCascade
from tgi_csd.drafting import DraftingSession
from tgi_csd.errors import RequestError
from tgi_csd.runner import ModelRunner, Timing, calibration_shapes, catch_up_shapes
from tgi_csd.sampling import SamplingParams, UniformStream
from tgi_csd.stats import EngineStats
from tgi_csd.tokens import TokenSeq
from tgi_csd.verification import Verdict, verify_greedy, verify_sampled

_ids = itertools.count()
#: a drafter's calibration times forwards of up to this many tokens (as many rows drafting one position each, or
#: a batch verifying its own drafter's draft), and its catch-ups (`runner.catch_up_shapes`)
DRAFTER_CALIBRATION_TOKENS = 64
#: a calibration's timed forwards, by runner name (`Engine.calibrate`)
Calibration = dict[str, list[Timing]]


class Request(BaseModel):
    """One generation request. Bad values raise one error naming the field."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    prompt_ids: list[int] = Field(min_length=1, description="prompt token ids (non-empty)")
    max_new_tokens: int = Field(64, gt=0)
    params: SamplingParams = Field(default_factory=SamplingParams)
    stop: list[str] = Field(default_factory=list, description="stop strings")
    ignore_eos: bool = False
    speculation: str = Field("auto", description="'auto' (the config's cascade), 'off' (no draft for this "
                             "request) or the name of one of the config's `profiles`")
    id: int = Field(default_factory=lambda: next(_ids))


@dataclass
class Result:
    id: int
    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    #: the request's profile, its draft tokens proposed / accepted per drafter, the target forwards it took
    #: part in (its prefill included) and its tokens per target forward
    speculation: dict | None = None


@dataclass
class _Sequence:
    request: Request
    tokens: list[int]
    stream: UniformStream | None
    generated: int = 0
    finish_reason: str | None = None
    forwards: int = 0  # target forwards this sequence took part in

    @property
    def remaining(self) -> int:
        return self.request.max_new_tokens - self.generated


class Engine:
    """Target + cascade. A `step()` either admits waiting requests (one target prefill gives their
    first tokens) or drafts for every running sequence and verifies all drafts in one target forward;
    then it retires finished sequences.

    Invariants: the target's and every drafter's rows follow `self.running` in order; emitted
    tokens are always the target's own choices (greedy argmax or seeded sample), so outputs do
    not depend on the drafters. Admission is first come, first served, and never two steps running
    while sequences run (so steady arrivals cannot starve them); with `kv_budget_bytes` a request
    joins only when the target's KV buffers, sized for every live request's longest possible
    sequence, stay within it. A step with nothing waiting tells the drafting session each row's remaining
    tokens: the batch drains, and adaptive control prices it by its slowest row.
    """

    def __init__(self, target: ModelRunner, session: DraftingSession, tokenizer,
                 kv_budget_bytes: int | None = None, calibration: Calibration | None = None) -> None:
        self.target = target
        self.session = session
        self.tokenizer = tokenizer
        self.kv_budget_bytes = kv_budget_bytes
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.waiting: list[_Sequence] = []
        self.running: list[_Sequence] = []
        self._admitted_last = False
        controllers = session.controllers
        #: the calibration this engine's controllers were seeded with (None: not calibrated)
        self.calibration = (self.calibrate(calibration)
                            if controllers and all(c.settings.calibrate for c in controllers) else None)

    def calibrate(self, reuse: Calibration | None = None) -> Calibration:
        """Time the target's and each model drafter's forwards (`ModelRunner.calibrate`) and seed every
        adaptive controller with them: from its first step it prices each allocation by the batch's shape,
        including the jump in cost past the CPU kernel's row limit, instead of guessing. Before any request
        joins. `reuse`: an earlier engine's calibration over the same models on this machine, seeded instead of
        timed again. Returns the calibration, by runner name."""
        runners = [self.target, *(drafter.runner for drafter in self.session.model_drafters)]
        calibration = {}
        for runner in runners:
            if reuse is not None and runner.name in reuse:
                runner.seed(reuse[runner.name])
                calibration[runner.name] = reuse[runner.name]
            else:
                shapes = (None if runner is self.target
                          else calibration_shapes(DRAFTER_CALIBRATION_TOKENS) + catch_up_shapes())
                calibration[runner.name] = runner.calibrate(shapes)
        forward_costs = {drafter.name: drafter.runner.cost for drafter in self.session.model_drafters}
        for controller in self.session.controllers:
            for name in controller.names:
                controller.seed_drafter(name, forward_costs.get(name))
        return calibration

    @property
    def stats(self) -> EngineStats:
        return self.session.stats

    @property
    def drafters(self) -> list[Drafter]:
        return self.session.drafters

    @property
    def top(self) -> HorizontalCascade:
        return self.session.top

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: CascadeConfig) -> Engine:
        from tgi_csd import models

        target_dir = models.resolve_model(config.target.model)
        tokenizer = models.load_tokenizer(target_dir)
        target_model = models.load_model(target_dir, config.target.dtype, config.target.device)
        vocab = target_model.get_output_embeddings().weight.shape[0]
        assets = DrafterAssets.load(config.drafters, target_model, tokenizer, config.target.dtype, vocab,
                                    config.target.device)
        target = ModelRunner(target_model, "target", config.cpu_kernel)
        budget = None if config.target_kv_budget_mb is None else int(config.target_kv_budget_mb * 2**20)
        return cls(target, build_session(config, assets, vocab, target_cost=target.cost), tokenizer, budget)

    @classmethod
    def assemble(cls, target: ModelRunner, levels: list[Level], k_matrix: list[list[int]], tokenizer, *,
                 adaptive: AdaptiveSettings | None = None, kv_budget_bytes: int | None = None,
                 drafter_kv_budget_mb: float | None = None, profiles: dict[str, list[int]] | None = None,
                 calibration: Calibration | None = None) -> Engine:
        """An engine over drafters composed in code (`builder.compose`): row 0 of the k-matrix drafts for
        the target, row r for model level r; with `adaptive`, the entries are bounds and controllers choose;
        `profiles` are other rows 0 that requests may choose by name; `calibration` as in `calibrate`."""
        session = compose(levels, k_matrix, target.vocab_size, adaptive=adaptive, target_cost=target.cost,
                          kv_budget_mb=drafter_kv_budget_mb, profiles=profiles)
        return cls(target, session, tokenizer, kv_budget_bytes, calibration)

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        """Queue a request; it joins the batch at a coming step. A request the engine could never serve
        right (an id already live, an unknown speculation profile, a token outside the vocabulary, more
        positions than the target has, more KV than its budget) raises `RequestError` here, and nothing else
        changes."""
        live = {s.request.id for s in (*self.waiting, *self.running)}
        if request.id in live:
            raise RequestError(f"id: request {request.id} is already queued or running; give each live request "
                               "its own id")
        if request.speculation not in self.session.choices:
            raise RequestError(f"speculation: unknown profile {request.speculation!r}; choose one of "
                               f"{', '.join(self.session.choices)} (profiles come from the config's `profiles`)")
        vocab = self.target.vocab_size
        bad = next((t for t in request.prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise RequestError(f"prompt_ids: token id {bad} is outside the target's vocabulary [0, {vocab})")
        positions = self._positions(request)
        limit = self.target.max_positions
        if limit is not None and positions > limit:
            raise RequestError(
                f"prompt_ids + max_new_tokens: {len(request.prompt_ids)} + {request.max_new_tokens} tokens need "
                f"{positions} positions, more than the target's {limit}; shorten the prompt or lower max_new_tokens"
            )
        if self.kv_budget_bytes is not None and self._kv_bytes(1, positions) > self.kv_budget_bytes:
            raise RequestError(
                f"max_new_tokens: this request alone needs {self._kv_bytes(1, positions) / 2**20:.1f} MiB of target "
                f"KV, more than target_kv_budget_mb ({self.kv_budget_bytes / 2**20:.1f} MiB); shorten it or raise "
                "the budget"
            )
        stream = None if request.params.greedy else UniformStream(request.params.seed)
        self.waiting.append(_Sequence(request, list(request.prompt_ids), stream))

    @staticmethod
    def _positions(request: Request) -> int:
        """Positions the target ever holds for `request`: its prompt and every generated token but the last
        (drafts never reach past that: a step drafts at most the tokens the request still lacks, minus one)."""
        return len(request.prompt_ids) + request.max_new_tokens - 1

    def _kv_bytes(self, rows: int, positions: int) -> int:
        """Target KV bytes for `rows` rows in buffers of `positions` positions (plus the scratch slot)."""
        return rows * (positions + 1) * self.target.cache.token_bytes

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def generate(self, requests: list[Request]) -> list[Result]:
        """Run `requests` to completion as one continuous batch; results in request order. A request refused
        by `add_request` (or a repeated id) refuses the whole call before any of it is queued."""
        ids = [r.id for r in requests]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise RequestError(f"id: requests {repeated} appear more than once; give each request its own id")
        queued = len(self.waiting)
        try:
            for request in requests:
                self.add_request(request)
        except RequestError:
            del self.waiting[queued:]
            raise
        done: dict[int, Result] = {}
        while self.has_work():
            for result in self.step():
                done[result.id] = result
        return [done[r.id] for r in requests]

    # -- one step --------------------------------------------------------------------------------
    def step(self) -> list[Result]:
        start = clock.now()
        admit = self.waiting and not (self.running and self._admitted_last)
        self._admitted_last = bool(admit and self._admit())
        if not self._admitted_last and self.running:
            self._speculate()
        results = self._retire()
        self.session.track_memory()
        self.stats.steps += 1
        self.stats.step_seconds += clock.now() - start
        return results

    def _verify(self, logits, drafts: Draft, seqs: list[_Sequence]) -> Verdict:
        if all(s.stream is None for s in seqs):
            return verify_greedy(logits, drafts.tokens)
        uniforms = [
            s.stream.window(s.generated, len(d) + 1) if s.stream is not None else (None, None)
            for s, d in zip(seqs, drafts.tokens)
        ]
        return verify_sampled(logits, drafts.tokens, [s.request.params for s in seqs], uniforms, drafts.probs)

    def _joining(self) -> int:
        """How many waiting requests, from the front of the queue, fit the target's KV budget now (the
        buffers hold every row at the longest live request's length, and never shrink while rows run)."""
        if self.kv_budget_bytes is None:
            return len(self.waiting)
        rows = len(self.running)
        positions = max([self.target.cache.capacity - 1 if rows else 0,
                         *(self._positions(s.request) for s in self.running)])
        count = 0
        for seq in self.waiting:
            positions = max(positions, self._positions(seq.request))
            if self._kv_bytes(rows + count + 1, positions) > self.kv_budget_bytes:
                break
            count += 1
        return count

    def _admit(self) -> int:
        """Prefill the requests that may join now; returns how many joined."""
        count = self._joining()
        if not count:
            return 0
        new, self.waiting = self.waiting[:count], self.waiting[count:]
        if self.kv_budget_bytes is not None:  # the buffers never grow past the longest live request
            self.target.cache.grow_limit = max(self._positions(s.request) for s in (*self.running, *new)) + 1
        first = len(self.running)
        rows = list(range(first, first + len(new)))
        self.target.add_rows(len(new))
        self.running.extend(new)
        logits = self.target.forward(rows, [TokenSeq(s.tokens) for s in new], [1] * len(new))
        empty = Draft([[] for _ in new], [[] for _ in new], None)
        verdict = self._verify(logits, empty, new)
        for seq, tokens in zip(new, verdict.tokens):
            self._append(seq, tokens)
        self.target.commit([s.tokens for s in self.running])
        for seq in new:
            seq.forwards += 1
        self.session.add([s.request.id for s in new], [s.tokens for s in new], [s.request.params for s in new],
                         [s.request.speculation for s in new])
        return count

    def _speculate(self) -> None:
        ids = [s.request.id for s in self.running]
        limits = [min(self.session.max_tokens, s.remaining - 1) for s in self.running]
        draining = not self.waiting  # nothing to join: the batch ends with its slowest row
        draft = self.session.propose(ids, limits, [s.remaining for s in self.running] if draining else None)
        seqs = [TokenSeq(s.tokens, d) for s, d in zip(self.running, draft.tokens)]
        logits = self.target.forward(list(range(len(ids))), seqs, [len(d) + 1 for d in draft.tokens])
        verdict = self._verify(logits, draft, self.running)
        self.session.settle(ids, verdict.accepted)
        for seq, tokens in zip(self.running, verdict.tokens):
            seq.forwards += 1
            self._append(seq, tokens)
        self.target.commit([s.tokens for s in self.running])
        self.session.commit()

    def _append(self, seq: _Sequence, tokens: list[int]) -> None:
        """Append target-chosen tokens one by one, stopping at EOS, the length limit or a stop string."""
        for token in tokens:
            seq.tokens.append(token)
            seq.generated += 1
            self.stats.generated_tokens += 1
            if token in self.eos_ids and not seq.request.ignore_eos:
                seq.finish_reason = "eos"
            elif seq.generated >= seq.request.max_new_tokens:
                seq.finish_reason = "length"
            elif seq.request.stop and self._hits_stop(seq):
                seq.finish_reason = "stop"
            if seq.finish_reason:
                return

    def _hits_stop(self, seq: _Sequence) -> bool:
        # Checked after every token, so a stop string found now ends at this token. A token
        # decodes to at least one character except for byte fragments: 8 tokens of margin.
        window = max(len(s) for s in seq.request.stop) + 8
        text = self.tokenizer.decode(seq.tokens[len(seq.request.prompt_ids):][-window:])
        return any(s in text for s in seq.request.stop)

    def _retire(self) -> list[Result]:
        keep = [i for i, s in enumerate(self.running) if s.finish_reason is None]
        if len(keep) == len(self.running):
            return []
        done = [s for s in self.running if s.finish_reason is not None]
        results = [
            Result(s.request.id, s.request.prompt_ids, s.tokens[len(s.request.prompt_ids):], s.finish_reason,
                   {**self.session.request_report(s.request.id), "target_forwards": s.forwards,
                    "tokens_per_target_forward": round(s.generated / s.forwards, 3)})
            for s in done
        ]
        self.target.keep_rows(keep)
        self.session.drop([s.request.id for s in done])
        self.running = [self.running[i] for i in keep]
        return results

    # -- reporting -------------------------------------------------------------------------------
    def report(self) -> dict:
        """Stats with model-forward counts and times read from the runners."""
        return self.refresh_stats().as_dict()

    def refresh_stats(self) -> EngineStats:
        """`self.stats` with model-forward counts and times copied from the runners."""
        self.stats.target_forwards = self.target.forwards
        self.stats.target_seconds = self.target.forward_seconds
        return self.session.refresh_stats()
