"""Drafters and cascade wiring from a `CascadeConfig`: shared by the engine and the TGI strategy."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from tgi_csd.adaptive import KController, SizeCost
from tgi_csd.cascade import HorizontalCascade
from tgi_csd.config import AdaptiveSettings, DrafterSpec, KernelSetting, MaGSpec, ModelDrafterSpec, TGINGramSpec
from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.bigram import BigramTable, tokenizer_fingerprint
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.errors import ConfigError
from tgi_csd.kv_cache import BudgetedKVCache
from tgi_csd.runner import ModelRunner
from tgi_csd.stats import EngineStats


def model_drafter(spec: ModelDrafterSpec, target_model: PreTrainedModel | None, tokenizer, dtype: str,
                  vocab: int, loaded: dict[tuple[Path, str], PreTrainedModel] | None = None,
                  cpu_kernel: KernelSetting = "off") -> ModelDrafter:
    """A neural drafter: cut from `target_model` or loaded, then its adapter applied (merged or not).

    `loaded` caches separate models by folder and dtype, so drafters naming one model share its
    weights (each keeps its own unmerged adapter). `target_model` may be None only when the drafter
    is a separate model; then an adapter's target binding cannot be checked and is not.
    """
    from tgi_csd import models

    if spec.from_target_layers is not None:
        if target_model is None:
            raise ConfigError(f"drafters.{spec.name}.from_target_layers: needs the target's weights")
        model = models.cut_from_target(target_model, spec.from_target_layers)
    else:
        folder = models.resolve_model(spec.model)
        if tokenizer_fingerprint(models.load_tokenizer(folder)) != tokenizer_fingerprint(tokenizer):
            raise ConfigError(f"drafters.{spec.name}.model: its tokenizer differs from the target's; "
                              "a drafter must share the target's vocabulary")
        loaded = {} if loaded is None else loaded
        if (folder, dtype) not in loaded:
            loaded[folder, dtype] = models.load_model(folder, dtype)
        model = loaded[folder, dtype]
    drafter_vocab = model.get_output_embeddings().weight.shape[0]
    if drafter_vocab != vocab:
        raise ConfigError(f"drafters.{spec.name}: vocabulary size {drafter_vocab} differs from the target's "
                          f"{vocab}; a drafter must share the target's vocabulary")
    if spec.adapter:
        from tgi_csd.adapters import target_fingerprint

        fingerprint = None if target_model is None else target_fingerprint(target_model, tokenizer)
        model = models.apply_adapter(model, spec.adapter, fingerprint, spec.from_target_layers, spec.merge_adapter)
    runner = ModelRunner(model, spec.name, cpu_kernel)
    return ModelDrafter(spec.name, runner, spec.leniency, spec.sample, spec.min_confidence)


def bigram_table(source: str | None, tokenizer, vocab: int) -> BigramTable | None:
    """MaG's bigram table as `MaGSpec.bigram` names it: None, 'default' (built once, cached) or a path."""
    from tgi_csd import models

    if source is None:
        return None
    if source == "default":
        return models.default_bigram(tokenizer, vocab)
    return BigramTable.load(Path(source), tokenizer)


def build_drafters(specs: list[DrafterSpec], target_model: PreTrainedModel | None, tokenizer, dtype: str,
                   vocab: int, kv_budget_mb: float | None = None, cpu_kernel: KernelSetting = "off") -> list[Drafter]:
    """One drafter per spec, in config order (largest first); the model drafters' KV capped at
    `kv_budget_mb` MiB together (`share_kv_budget`), or not capped when None; their forwards use
    the CPU kernel as `cpu_kernel` says."""
    drafters: list[Drafter] = []
    loaded: dict[tuple[Path, str], PreTrainedModel] = {}
    for spec in specs:
        if isinstance(spec, ModelDrafterSpec):
            drafters.append(model_drafter(spec, target_model, tokenizer, dtype, vocab, loaded, cpu_kernel))
        elif isinstance(spec, MaGSpec):
            bigram = bigram_table(spec.bigram, tokenizer, vocab)
            drafters.append(MaGDrafter(bigram, spec.name, spec.max_ngram, spec.min_ngram, spec.lead_ngram))
        elif isinstance(spec, TGINGramSpec):
            drafters.append(TGINGramDrafter(spec.name))
    if kv_budget_mb is not None:
        share_kv_budget(drafters, kv_budget_mb)
    return drafters


def share_kv_budget(drafters: list[Drafter], budget_mb: float) -> None:
    """Cap the model drafters' KV buffers at `budget_mb` MiB together (before any row joins), split in
    proportion to what a token position costs each, so that each holds as many positions."""
    runners = [d.runner for d in drafters if isinstance(d, ModelDrafter)]
    costs = [BudgetedKVCache.position_bytes(r.cache) for r in runners]
    for runner, cost in zip(runners, costs):
        runner.limit_kv(int(budget_mb * 2**20 * cost / sum(costs)))


def wire_cascade(drafters: list[Drafter], k_matrix: list[list[int]], stats: EngineStats,
                 adaptive: AdaptiveSettings | None, target_cost: SizeCost | None, vocab_size: int,
                 verify_width: int | None = None) -> HorizontalCascade:
    """Row 0 of the k-matrix drafts for the target (returned); row r for model drafter r (set as its `below`).

    With `adaptive`, each row gets a `KController` bounded by the row: the target's row costed by
    `target_cost` (verifying `verify_width` tokens per draft when the target pads drafts), a model
    drafter's row by that drafter's own forward cost.
    """
    model_drafters = [d for d in drafters if isinstance(d, ModelDrafter)]
    for drafter, row in zip(model_drafters, k_matrix[1:]):
        drafter.below = HorizontalCascade(drafter.name, list(zip(drafters, row)), stats, vocab_size)
        if adaptive is not None:
            _steer(drafter.below, drafter.runner.cost, adaptive, None)
    top = HorizontalCascade("target", list(zip(drafters, k_matrix[0])), stats, vocab_size)
    if adaptive is not None:
        if target_cost is None:
            raise ValueError("adaptive cascades need the target's forward cost")
        _steer(top, target_cost, adaptive, verify_width)
    return top


def _steer(row: HorizontalCascade, cost: SizeCost, adaptive: AdaptiveSettings, verify_width: int | None) -> None:
    names = [d.name for d, _ in row.segments]
    row.steer(KController(names, [k for _, k in row.segments], cost, adaptive, verify_width))
