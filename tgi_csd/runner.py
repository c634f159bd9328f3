"""Runs one HF causal LM over the rows of a batch, keeping each row's KV cache in step with its tokens."""

from __future__ import annotations

import contextlib
import inspect

import torch
from transformers import PreTrainedModel

from tgi_csd import clock, models
from tgi_csd.adaptive import ShapeCost
from tgi_csd.config import KernelSetting
from tgi_csd.kv_cache import BudgetedKVCache, RaggedKVCache
from tgi_csd.small_rows import MAX_ROWS, resolve
from tgi_csd.tokens import TokenSeq

#: one row's forward sizes (tokens fed) a calibration times: every size a few-token kernel covers closely, both
#: sides of its row limit, then a few wider ones
CALIBRATION_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 28, 32, 33, 40, 48, 64)
#: the row counts a calibration times, one for each power-of-two bucket of `ShapeCost` (larger batches borrow
#: the last bucket until they are timed live)
CALIBRATION_ROWS = (1, 2, 4, 8, 16)
#: one timed forward of a calibration: rows, tokens fed (rows x width), positions attended (its window), seconds
Timing = tuple[int, int, int, float]
#: tokens a row a calibration times in a batch of several rows (a verify of 0, 1, 2, 4, 8 and 16 draft tokens)
BATCH_WIDTHS = (1, 2, 3, 5, 9, 17)
#: tokens a row a model drafter's calibration times it catching up (adaptive control prices a catch-up by them)
CATCH_UP_WIDTHS = (128, 256)
#: the shapes (rows, tokens a row) a calibration times again after `LONG_CONTEXT` more tokens, to price how a
#: forward's attention grows with its context (`ShapeCost.fit_attention`)
LONG_CONTEXT_SHAPES = ((1, 1), (1, 8), (4, 1), (4, 2), (4, 4))
LONG_CONTEXT = 320


def calibration_shapes(max_tokens: int = 128) -> list[tuple[int, int]]:
    """The (rows, tokens a row) a calibration times, at most `max_tokens` fed: one row at `CALIBRATION_SIZES`,
    each other row count of `CALIBRATION_ROWS` at `BATCH_WIDTHS` and both sides of the CPU kernel's row limit."""
    shapes = [(1, n) for n in CALIBRATION_SIZES]
    for rows in CALIBRATION_ROWS[1:]:
        widths = {*BATCH_WIDTHS, MAX_ROWS // rows, MAX_ROWS // rows + 1}
        shapes += [(rows, width) for width in sorted(widths)]
    return [(rows, width) for rows, width in shapes if rows * width <= max_tokens]


def catch_up_shapes() -> list[tuple[int, int]]:
    """The (rows, tokens a row) a model drafter's calibration also times: its cache catching up `CATCH_UP_WIDTHS`
    tokens a row (a prompt, or the steps it sat out) at each row count of `CALIBRATION_ROWS`."""
    return [(rows, width) for rows in CALIBRATION_ROWS for width in CATCH_UP_WIDTHS]


class ModelRunner:
    """Feeds each row only the tokens its cache lacks, then returns logits for the last positions.

    Invariant: cache row `r` holds the KV of `cached[r][:cache.lengths[r]]`; `synced[r]` leading
    tokens of `cached[r]` are known to equal the row's committed history, so finding what to
    re-feed never scans the whole history. The cache may lower a row's length at any `reserve` (a
    KV budget dropping the row); like a rollback, the next forward then re-feeds what is missing.

    `cpu_kernel` (`auto`/`on`/`off`): whether forwards of 2-32 tokens use `tgi_csd.small_rows`'s
    linear (float32 CPU models only). One-token forwards do only with `drafts_only`: a drafter's
    tokens are proposals the target verifies, so its rounding never reaches an output; the target's
    one-token forwards keep torch's, so a step without a draft computes what the target alone does.
    """

    def __init__(self, model: PreTrainedModel, name: str, cpu_kernel: KernelSetting = "off", *,
                 drafts_only: bool = False) -> None:
        self.model = model.eval()
        self.name = name
        self.linear_mode = resolve(cpu_kernel, model.device, model.dtype, min_rows=1 if drafts_only else 2)
        if self.linear_mode:
            self.linear_mode.install(model)
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache = RaggedKVCache(
            num_layers=config.num_hidden_layers,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            dtype=model.dtype,
            device=model.device,
        )
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        #: positions the model was trained for (None when its config does not say)
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)
        self.cached: list[list[int]] = []
        self.synced: list[int] = []
        self.forwards = 0
        self.forward_seconds = 0.0
        self.cost = ShapeCost()  # seconds per forward by rows and tokens fed (rows x padded width)
        #: bytes of the parameters and buffers the model reads, each tensor's storage counted once
        self.weight_bytes = models.weight_bytes(model)

    def limit_kv(self, budget_bytes: int) -> None:
        """Cap the KV buffers at `budget_bytes` (a `BudgetedKVCache`); only before any row joins."""
        assert self.cache.batch_size == 0, "set the KV budget before rows join"
        cache = self.cache
        self.cache = BudgetedKVCache(cache.num_layers, cache.num_kv_heads, cache.head_dim, cache.dtype,
                                     budget_bytes, cache.device)

    # -- batch membership (mirrors the engine's rows) --------------------------------------------
    def add_rows(self, count: int) -> None:
        self.cache.add_rows(count)
        self.cached.extend([] for _ in range(count))
        self.synced.extend([0] * count)

    def keep_rows(self, keep: list[int]) -> None:
        self.cache.keep_rows(keep)
        self.cached = [self.cached[i] for i in keep]
        self.synced = [self.synced[i] for i in keep]

    def commit(self, histories: list[list[int]]) -> None:
        """Advance `synced` over the committed histories (called once per engine step)."""
        for row, history in enumerate(histories):
            cached, i = self.cached[row], self.synced[row]
            end = min(len(cached), len(history), self.cache.lengths[row])
            while i < end and cached[i] == history[i]:
                i += 1
            self.synced[row] = i

    def _valid_prefix(self, row: int, seq: TokenSeq, num_logits: int) -> int:
        cached, i = self.cached[row], self.synced[row]
        end = min(self.cache.lengths[row], len(seq) - num_logits)
        while i < end and cached[i] == seq[i]:
            i += 1
        return min(i, end)

    def calibrate(self, shapes: list[tuple[int, int]] | None = None, context: int = 64,
                  repeats: int = 2, long_context: int | None = LONG_CONTEXT) -> list[Timing]:
        """Seed `cost` with timed forwards (the fastest of `repeats`) of each shape, `rows` rows fed `width`
        tokens each after `context` tokens (default: `calibration_shapes()`), then those of `LONG_CONTEXT_SHAPES`
        among them after `long_context` tokens (None: not), on scratch rows that leave after; counters are left
        as they were. Only while no row is live, and only the shapes the KV budget and the model's positions let
        the scratch rows grow to. Returns the timings (`seed` gives them to another runner over the same model)."""
        assert self.cache.batch_size == 0, "calibrate before rows join"
        shapes = [(rows, width) for rows, width in (shapes or calibration_shapes())
                  if self.max_positions is None or context + width <= self.max_positions]
        if not shapes:
            return []
        contexts = [(context, shapes)]
        if long_context is not None:
            again = [shape for shape in shapes if shape in LONG_CONTEXT_SHAPES
                     and (self.max_positions is None or long_context + shape[1] <= self.max_positions)]
            if again and long_context > context:
                contexts.append((long_context, again))
        rows = max(r for r, _ in shapes)
        longest = max(c + w for c, timed in contexts for _, w in timed)
        tokens = [[1 + (i + 7 * row) % (self.vocab_size - 1) for i in range(longest)] for row in range(rows)]
        forwards, seconds, observed = self.forwards, self.forward_seconds, self.cost
        self.cost = ShapeCost()  # the scratch forwards' own observations are dropped
        measured: list[Timing] = []
        self.add_rows(rows)
        try:
            for filled, timed in contexts:
                fill = max(r for r, _ in timed)
                granted = self.reserve(list(range(fill)), [filled + max(w for _, w in timed)] * fill)
                fill = granted.index(False) if False in granted else fill
                if fill:  # fills the contexts (the first time, warms the kernels up)
                    self.forward(list(range(fill)), [TokenSeq(t[:filled]) for t in tokens[:fill]], [1] * fill)
                for count, width in timed:
                    if count > fill:
                        continue
                    seqs = [TokenSeq(t[: filled + width]) for t in tokens[:count]]
                    timings = []
                    for _ in range(repeats):
                        start = clock.now()
                        self.forward(list(range(count)), seqs, [width] * count)  # feeds exactly the last `width`
                        timings.append(clock.now() - start)
                    measured.append((count, count * width, filled + width, min(timings)))
        finally:
            self.keep_rows([])
            self.cost, self.forwards, self.forward_seconds = observed, forwards, seconds
        self.seed(measured)
        return measured

    def seed(self, timings: list[Timing]) -> None:
        """Price forwards not yet seen live from a calibration's timings (this runner's, or those of a runner
        over the same model on this machine), and how their attention grows with the context."""
        self.cost.fit_attention(timings)
        for rows, tokens, window, seconds in timings:
            self.cost.seed(rows, tokens, seconds, window)

    def reserve(self, rows: list[int], needs: list[int]) -> list[bool]:
        """Which of `rows` the coming forwards may feed, row `rows[i]` up to `needs[i]` tokens long
        (all, unless the KV is capped); the forwards until the next `reserve` take only those."""
        return self.cache.reserve(rows, needs)

    # -- the forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, rows: list[int], seqs: list[TokenSeq], num_logits: list[int]) -> torch.Tensor:
        """Bring each row's cache up to `seqs[i]` and return logits `[R, M, V]`, M = max(num_logits).

        Row `i`'s logits for the last `num_logits[i]` positions of `seqs[i]` are
        `out[i, M - num_logits[i]:]` (right-aligned). At least those positions are always fed.
        """
        new_tokens = []
        for row, seq, wanted in zip(rows, seqs, num_logits):
            valid = self._valid_prefix(row, seq, wanted)
            cached = self.cached[row]
            del cached[valid:]
            self.cache.rollback(row, valid)
            fresh = seq.suffix(valid)
            cached.extend(fresh)
            new_tokens.append(fresh)
        width = max(len(t) for t in new_tokens)
        input_ids = torch.tensor([[0] * (width - len(t)) + t for t in new_tokens], dtype=torch.long,
                                 device=self.cache.device)
        position_ids, mask = self.cache.prepare(rows, [len(t) for t in new_tokens], width)
        window = mask.shape[-1]  # every fed token attends to this many positions (masked or not)
        keep = max(num_logits)
        start = clock.now()
        with self.linear_mode or contextlib.nullcontext():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=keep,
                **{self._cache_kwarg: self.cache},
            )
        seconds = clock.now() - start
        self.forward_seconds += seconds
        self.forwards += 1
        self.cost.observe(len(rows), len(rows) * width, seconds, window)
        self.cache.commit(rows, [len(self.cached[r]) for r in rows])
        return out.logits.float() if out.logits.dtype != torch.float32 else out.logits
