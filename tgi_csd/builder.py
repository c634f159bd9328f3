"""Drafters and their cascades: the one construction path of the engine, bench, tune and the TGI strategy.

Two stages. `DrafterAssets.load` does what is expensive and shareable: each model drafter's HF model (a
cut of the target or a loaded model, with its adapter) and each MaG drafter's bigram table.
`build_session` makes what belongs to one engine from a config and assets: runners and KV caches (the
drafters' KV budget split among them), drafters built complete with the cascade below them,
controllers and counters; it may run many times over one set of assets (bench, tune). Code that
composes drafters of its own (tests, harnesses) calls `compose` with a `ModelLevel` per model drafter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel

from tgi_csd.adaptive import KController, ShapeCost
from tgi_csd.config import (
    AdaptiveSettings,
    CascadeConfig,
    DrafterSpec,
    MaGSpec,
    ModelDrafterSpec,
    TGINGramSpec,
)
from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.bigram import BigramTable, default_bigram
from tgi_csd.drafters.cascade import HorizontalCascade
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.drafters.suffix_store import SuffixStore
from tgi_csd.drafting import AUTO, DraftingSession
from tgi_csd.errors import ConfigError
from tgi_csd.kv_cache import BudgetedKVCache
from tgi_csd.runner import ModelRunner
from tgi_csd.stats import EngineStats


# -- stage 1: the assets -------------------------------------------------------------------------------
def drafter_model(spec: ModelDrafterSpec, target_model: PreTrainedModel | None, tokenizer, dtype: str, vocab: int,
                  loaded: dict[tuple[Path, str], PreTrainedModel], device: str = "cpu") -> PreTrainedModel:
    """A model drafter's HF model: cut from `target_model` or loaded, then its adapter applied (merged or not).

    `loaded` caches separate models by folder and dtype, so drafters naming one model share its weights
    (each keeps its own unmerged adapter). `target_model` may be None only when the drafter is a separate
    model; then an adapter's target binding cannot be checked and is not. A separate model loads onto
    `device`; a cut lives where `target_model` does.
    """
    from tgi_csd import models

    if spec.from_target_layers is not None:
        if target_model is None:
            raise ConfigError(f"drafters.{spec.name}.from_target_layers: needs the target's weights")
        model = models.cut_from_target(target_model, spec.from_target_layers)
    else:
        folder = models.resolve_model(spec.model)
        if models.tokenizer_fingerprint(models.load_tokenizer(folder)) != models.tokenizer_fingerprint(tokenizer):
            raise ConfigError(f"drafters.{spec.name}.model: its tokenizer differs from the target's; "
                              "a drafter must share the target's vocabulary")
        if (folder, dtype) not in loaded:
            loaded[folder, dtype] = models.load_model(folder, dtype, device)
        model = loaded[folder, dtype]
    drafter_vocab = model.get_output_embeddings().weight.shape[0]
    if drafter_vocab != vocab:
        raise ConfigError(f"drafters.{spec.name}: vocabulary size {drafter_vocab} differs from the target's "
                          f"{vocab}; a drafter must share the target's vocabulary")
    if spec.adapter:
        from tgi_csd.adapters import apply_adapter, target_fingerprint

        fingerprint = None if target_model is None else target_fingerprint(target_model, tokenizer)
        model = apply_adapter(model, spec.adapter, fingerprint, spec.from_target_layers, spec.merge_adapter)
    return model


def bigram_table(source: str | None, tokenizer, vocab: int) -> BigramTable | None:
    """MaG's bigram table as `MaGSpec.bigram` names it: None, 'default' (built once, cached) or a path."""
    if source is None:
        return None
    if source == "default":
        return default_bigram(tokenizer, vocab)
    return BigramTable.load(Path(source), tokenizer)


def _unknown(spec: object) -> ConfigError:
    name = getattr(spec, "name", "?")
    return ConfigError(f"drafters.{name}: unknown drafter type {type(spec).__name__}; use one of: model, mag, "
                       "tgi-ngram")


@dataclass
class DrafterAssets:
    """A config's drafters' heavy parts, loaded once: HF models by model drafter, bigram tables by MaG drafter."""

    models: dict[str, PreTrainedModel]
    bigrams: dict[str, BigramTable | None]

    @classmethod
    def load(cls, specs: list[DrafterSpec], target_model: PreTrainedModel | None, tokenizer, dtype: str,
             vocab: int, device: str = "cpu") -> DrafterAssets:
        loaded: dict[tuple[Path, str], PreTrainedModel] = {}
        tables: dict[str | None, BigramTable | None] = {}
        assets = cls({}, {})
        for spec in specs:
            if isinstance(spec, ModelDrafterSpec):
                assets.models[spec.name] = drafter_model(spec, target_model, tokenizer, dtype, vocab, loaded, device)
            elif isinstance(spec, MaGSpec):
                if spec.bigram not in tables:
                    tables[spec.bigram] = bigram_table(spec.bigram, tokenizer, vocab)
                assets.bigrams[spec.name] = tables[spec.bigram]
            elif not isinstance(spec, TGINGramSpec):
                raise _unknown(spec)
        return assets


# -- stage 2: one engine's drafters ----------------------------------------------------------------------
@dataclass
class ModelLevel:
    """A model drafter before the cascade below it exists; `compose` builds it bottom up."""

    name: str
    runner: ModelRunner
    leniency: float | None = None
    sample: bool = False
    min_confidence: float | None = None
    prefill_chunk: int | None = None

    def build(self, below: HorizontalCascade | None) -> ModelDrafter:
        return ModelDrafter(self.name, self.runner, below, self.leniency, self.sample, self.min_confidence,
                            self.prefill_chunk)


Level = ModelLevel | Drafter


def share_kv_budget(runners: list[ModelRunner], budget_mb: float) -> None:
    """Cap the runners' KV buffers at `budget_mb` MiB together (before any row joins), split in proportion to
    what a token position costs each, so that each holds as many positions."""
    costs = [BudgetedKVCache.position_bytes(r.cache) for r in runners]
    for runner, cost in zip(runners, costs):
        runner.limit_kv(int(budget_mb * 2**20 * cost / sum(costs)))


def compose(levels: list[Level], k_matrix: list[list[int]], vocab_size: int, *,
            adaptive: AdaptiveSettings | None = None, target_cost: ShapeCost | None = None,
            verify_width: int | None = None, kv_budget_mb: float | None = None,
            profiles: dict[str, list[int]] | None = None) -> DraftingSession:
    """The drafting session over `levels` (largest first, model levels before statistical drafters).

    Row 0 of the k-matrix drafts for the target; row m + 1 for the m-th model level, whose drafter is built
    over that row's cascade (a level without a row drafts alone). With `adaptive`, each row gets a
    `KController` bounded by it: the top row costed by `target_cost` (verifying `verify_width` tokens per
    draft when the target pads drafts), a model drafter's row by that drafter's own forward cost. Each of
    `profiles` is another row 0 over the same drafters, for the requests that choose it (its own controller).
    """
    kinds = [isinstance(level, ModelLevel) for level in levels]
    if kinds != sorted(kinds, reverse=True):
        raise ValueError("model levels must come before the statistical drafters")
    stats = EngineStats()
    runners = [level.runner for level in levels if isinstance(level, ModelLevel)]
    if kv_budget_mb is not None and runners:
        share_kv_budget(runners, kv_budget_mb)
    drafters: list[Drafter] = list(levels)  # model levels replaced bottom up by their drafters
    for index in reversed(range(sum(kinds))):
        level = levels[index]
        below = None
        if index + 1 < len(k_matrix):
            row = k_matrix[index + 1]
            below = HorizontalCascade(level.name, list(zip(drafters[index + 1 :], row[index + 1 :])), stats,
                                      vocab_size)
            if adaptive is not None:
                _steer(below, level.runner.cost, adaptive, None)
        drafters[index] = level.build(below)
    tops = {name: HorizontalCascade("target", list(zip(drafters, row)), stats, vocab_size)
            for name, row in {AUTO: k_matrix[0], **(profiles or {})}.items()}
    if adaptive is not None:
        if target_cost is None:
            raise ValueError("adaptive cascades need the target's forward cost")
        for top in tops.values():
            _steer(top, target_cost, adaptive, verify_width)
    top = tops.pop(AUTO)
    return DraftingSession(drafters, top, stats, tops)


def build_session(config: CascadeConfig, assets: DrafterAssets, vocab_size: int, *, target_cost: ShapeCost,
                  verify_width: int | None = None) -> DraftingSession:
    """`config`'s drafters over `assets`, fresh: new runners, caches, controllers and counters. Every config key
    means the same for every caller (`drafter_kv_budget_mb` included)."""
    levels: list[Level] = []
    for spec in config.drafters:
        if isinstance(spec, ModelDrafterSpec):
            runner = ModelRunner(assets.models[spec.name], spec.name, config.cpu_kernel, drafts_only=True)
            levels.append(ModelLevel(spec.name, runner, spec.leniency, spec.sample, spec.min_confidence,
                                     spec.prefill_chunk))
        elif isinstance(spec, MaGSpec):
            store = None if spec.store is None else SuffixStore(**spec.store.model_dump())
            levels.append(MaGDrafter(assets.bigrams[spec.name], spec.name, spec.max_ngram, spec.min_ngram,
                                     spec.lead_ngram, store))
        elif isinstance(spec, TGINGramSpec):
            levels.append(TGINGramDrafter(spec.name))
        else:
            raise _unknown(spec)
    return compose(levels, config.k_matrix, vocab_size, adaptive=config.adaptive, target_cost=target_cost,
                   verify_width=verify_width, kv_budget_mb=config.drafter_kv_budget_mb, profiles=config.profiles)


def _steer(row: HorizontalCascade, cost: ShapeCost, adaptive: AdaptiveSettings, verify_width: int | None) -> None:
    names = [d.name for d, _ in row.segments]
    forwards = {d.name: d.runner.cost for d, _ in row.segments if isinstance(d, ModelDrafter)}
    row.steer(KController(names, [k for _, k in row.segments], cost, adaptive, verify_width, forwards))
