"""`csd`: Cascade Speculative Drafting as a TGI speculation strategy.

The shard is the target. The drafters and the cascade that drafts for it come from a
`CascadeConfig` YAML (`--speculation-config`; its `target.model` is not loaded as a target), or,
with no config, MaG (suffix match + the default bigram table) filling all S positions.

Per-request drafter state (MaG suffix indexes, model drafters' KV caches) lives in the drafting session's
rows, keyed by request id. Rows are global across TGI batches, so filter and concatenate move no data:
only the rows of requests that left are dropped.

Drafts are greedy: TGI verifies by exact match of the target's own (greedy or seeded-sampled)
choice, so a draft's probabilities are never used, and outputs do not depend on the drafts.

With `adaptive` in the config, the top row's controller may turn speculation off for a step: every
row's draft is then empty, the host passes no speculative ids, and the shard runs a plain decode
step (TGI handles `speculative_ids=None` as it does after merging batches). The shard's step time,
measured between proposals of equal batch size, is the controller's cost of verification.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tgi_csd import clock
from tgi_csd.adaptive import ShapeCost
from tgi_csd.config import CascadeConfig, ModelDrafterSpec, parse_config
from tgi_csd.drafting import DraftingSession
from tgi_csd.errors import ConfigError
from tgi_csd.metrics import MetricsServer, SummaryLog, serve_from_env
from tgi_csd.plugin.hookspecs import hookimpl

log = logging.getLogger(__name__)


class CSDStrategy:
    """Drives a `DraftingSession` with the shard as the target: TGI reports each step's accepted tokens at
    the next proposal, so that is where the previous drafts are settled."""

    def __init__(self, session: DraftingSession, target_cost: ShapeCost, speculate: int) -> None:
        self.session = session
        self.stats = session.stats
        self.target_cost = target_cost
        self.speculate = speculate
        self._last_step: tuple[int, int, float] | None = None  # rows, tokens verified, when proposed
        self.summary = SummaryLog(session.refresh_stats, logger=log)
        self.metrics: MetricsServer | None = None  # the Prometheus endpoint, when this shard serves it
        self.forwards: dict[int, int] = {}  # live request -> target forwards it took part in

    @hookimpl
    def tgi_speculation_add(self, request_ids, histories, speculation):
        self.session.drop(request_ids)  # ids the host announces again start afresh
        choices = self.session.choices
        unknown = sorted({s for s in speculation if s not in choices})
        if unknown:  # the router validates against the same list: only a mismatched router gets here
            log.warning("csd: unknown speculation %s; those requests run with auto (choices: %s)", unknown, choices)
        self.session.add(list(request_ids), list(histories), None,
                         [s if s in choices else "auto" for s in speculation])
        self.forwards.update(dict.fromkeys(request_ids, 0))  # the prefill's step proposes next: it counts there

    @hookimpl
    def tgi_speculation_profiles(self):
        return self.session.choices

    @hookimpl
    def tgi_speculation_report(self, request_id):
        if request_id not in self.session.requests:
            return None
        return {**self.session.request_report(request_id), "target_forwards": self.forwards.get(request_id, 0)}

    @hookimpl
    def tgi_speculation_propose(self, request_ids, histories, accepted, speculate):
        now = clock.now()
        if self._last_step is not None and self._last_step[0] == len(request_ids):
            rows, tokens, started = self._last_step
            self.target_cost.observe(rows, tokens, now - started)
        # `accepted` counts this step's tokens: 1 + the draft tokens the target took.
        self.session.settle(request_ids, [n - 1 for n in accepted])
        self.session.update(request_ids, histories)
        for request_id in request_ids:
            self.forwards[request_id] = self.forwards.get(request_id, 0) + 1
        self.stats.steps += 1
        self.stats.target_forwards += 1
        self.stats.generated_tokens += sum(accepted)
        self.session.commit()
        draft = self.session.propose(request_ids, [speculate] * len(request_ids))
        drafted = any(draft.tokens)
        self._last_step = (len(request_ids), len(request_ids) * (1 + (speculate if drafted else 0)), clock.now())
        self.summary.tick()
        return draft.tokens

    @hookimpl
    def tgi_speculation_filter(self, removed):
        self._release(removed)

    @hookimpl
    def tgi_speculation_clear_cache(self, batch_id, request_ids):
        self._release(list(self.session.ids) if batch_id is None else request_ids)

    def _release(self, request_ids) -> None:
        self.session.drop(request_ids)
        for request_id in request_ids:
            self.forwards.pop(request_id, None)

    @hookimpl
    def tgi_speculation_fault(self, hook):
        self.stats.strategy_faults[hook] += 1

    @hookimpl
    def tgi_speculation_stats(self):
        report = self.session.refresh_stats().as_dict()
        to_target = [pair for (reviewer, _), pair in self.stats.pairs.items() if reviewer == "target"]
        return {
            "proposal_steps": self.stats.steps,
            "draft_tokens_proposed": sum(p.proposed for p in to_target),
            "draft_tokens_accepted": sum(p.accepted for p in to_target),
            "live_rows": len(self.session.ids),
            "drafts": report["drafts"],
            "drafter_forwards": report["drafter_forwards"],
            "strategy_faults": report["strategy_faults"],
        }


def dtype_name(dtype) -> str:
    """The shard's torch dtype as a config dtype name (float32 when the host gives none)."""
    name = str(dtype or "float32").removeprefix("torch.")
    if name not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"csd: the shard's dtype {name} has no drafter equivalent; set target.dtype in the "
                          "config (float32, bfloat16 or float16)")
    return name


def default_config(speculate: int, model: str = "shard") -> CascadeConfig:
    """What `csd` runs without `--speculation-config`: MaG (suffix match + default bigram), k = S."""
    return parse_config({"target": {"model": model}, "drafters": [{"type": "mag"}], "k_matrix": [[speculate]]},
                        "default csd config")


def resolve_target_folder(model_id: str | None, config: CascadeConfig) -> Path:
    """A local folder with the target's safetensors: the shard's model id (a folder, or a Hub id
    already in the local Hub cache), else the config's `target.model`."""
    from tgi_csd import models

    if model_id:
        folder = Path(model_id).expanduser()
        if folder.is_dir():
            return folder
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(model_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors"]))
        except Exception:  # not in the local Hub cache: fall back to the config
            pass
    return models.resolve_model(config.target.model)


def shard_session(config: CascadeConfig, *, tokenizer, vocab_size: int, model_id: str | None, speculate: int,
                  dtype=None, device=None) -> tuple[DraftingSession, ShapeCost]:
    """The config's drafters for a shard (its `target.model` is not loaded as a target), and the cost the
    adaptive top row learns the shard's step time into (TGI pads every draft to `speculate`).

    Drafters run on `device` in `dtype` (the shard's torch device and dtype; CPU, float32 when None) unless
    the config's `target` sets them. Layer-cut
    (`from_target_layers`) drafters read only the layers they keep from the shard's checkpoint (`model_id`):
    one prefix, as deep as the deepest cut, shared by all cuts, never a whole copy of the target. On a GPU
    without `drafter_kv_budget_mb`, the drafters' KV is capped at `DEFAULT_KV_SHARE` of the free memory.
    A model drafter without `prefill_chunk` takes `DEFAULT_PREFILL_CHUNK`: a joining request's prompt reaches
    it over several steps (MaG drafts meanwhile), so no step pays for a whole long prompt in every drafter.
    """
    from tgi_csd import models
    from tgi_csd.builder import DrafterAssets, build_session

    if not config.drafters:
        raise ConfigError("drafters: the csd strategy needs at least one drafter; to disable speculation drop "
                          "--speculation-strategy")
    dtype = config.target.dtype if "dtype" in config.target.model_fields_set else dtype_name(dtype)
    device = config.target.device if "device" in config.target.model_fields_set else str(device or "cpu")
    cuts = [s.from_target_layers for s in config.drafters
            if isinstance(s, ModelDrafterSpec) and s.from_target_layers is not None]
    prefix = models.load_target_prefix(resolve_target_folder(model_id, config), max(cuts), dtype, device) \
        if cuts else None
    assets = DrafterAssets.load(config.drafters, prefix, tokenizer, dtype, vocab_size, device)
    del prefix  # its layers past the deepest cut were never loaded; what the cuts keep, they reference
    if config.drafter_kv_budget_mb is None and assets.models:
        budget = default_kv_budget_mb(device)
        if budget is not None:
            config = config.model_copy(update={"drafter_kv_budget_mb": budget})
            log.info("csd: drafters' KV capped at %.0f MiB (%.0f%% of free %s memory; set drafter_kv_budget_mb to "
                     "choose)", budget, DEFAULT_KV_SHARE * 100, device)
    config = config.model_copy(update={"drafters": [
        d.model_copy(update={"prefill_chunk": DEFAULT_PREFILL_CHUNK})
        if isinstance(d, ModelDrafterSpec) and d.prefill_chunk is None else d for d in config.drafters]})
    target_cost = ShapeCost()
    return build_session(config, assets, vocab_size, target_cost=target_cost, verify_width=speculate), target_cost


#: Prompt tokens a model drafter takes per step from a joining request, unless its config says otherwise.
DEFAULT_PREFILL_CHUNK = 256


#: The share of free accelerator memory the drafters' KV may take by default: TGI sizes its own KV cache from
#: what is free after the strategy loads, and drafter KV grows later, so it must have a bound from the start.
DEFAULT_KV_SHARE = 0.05


def default_kv_budget_mb(device: str) -> float | None:
    """`DEFAULT_KV_SHARE` of `device`'s free memory in MiB; None on the CPU (no cap by default)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return DEFAULT_KV_SHARE * free / 2**20


@hookimpl
def tgi_speculation_create(tokenizer, speculate, config, model_id, vocab_size, device, dtype):
    from tgi_csd.config import load_config

    cascade_config = load_config(config) if config else default_config(speculate)
    row0 = sum(cascade_config.k_matrix[0])
    if row0 < speculate:
        log.warning("csd: k_matrix row 0 drafts %d ids but --speculate is %d; the other %d positions are padding "
                    "(verified for nothing): lower --speculate or raise the k-matrix",
                    row0, speculate, speculate - row0)
    elif row0 > speculate:
        log.info("csd: k_matrix row 0 drafts %d ids; --speculate %d keeps the first %d", row0, speculate, speculate)
    session, target_cost = shard_session(cascade_config, tokenizer=tokenizer, vocab_size=vocab_size,
                                         model_id=model_id, speculate=speculate, dtype=dtype, device=device)
    log.info("csd: drafters %s, k_matrix %s%s", [d.name for d in session.drafters], cascade_config.k_matrix,
             " (adaptive bounds)" if cascade_config.adaptive else "")
    strategy = CSDStrategy(session, target_cost, speculate)
    strategy.metrics = serve_from_env(session.refresh_stats)
    if strategy.metrics is not None:
        log.info("csd: Prometheus metrics on port %d (TGI_CSD_METRICS_PORT)", strategy.metrics.port)
    return strategy
