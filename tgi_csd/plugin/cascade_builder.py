"""The drafters and the top horizontal cascade of a `CascadeConfig`, without a target runner.

Inside TGI the shard is the target: only the cascade that drafts for it (k-matrix row 0) and the
model drafters' own cascades (rows 1..) are built here. The config's `target.model` is not
loaded as a target; it is only read when a drafter is cut from the target's layers
(`from_target_layers`), and then only if the shard's own model folder is not known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tgi_csd.adaptive import SizeCost
from tgi_csd.cascade import HorizontalCascade
from tgi_csd.config import CascadeConfig, ModelDrafterSpec, parse_config
from tgi_csd.drafters.base import Drafter
from tgi_csd.errors import ConfigError
from tgi_csd.stats import EngineStats


@dataclass
class Cascade:
    """`target_cost` is what an adaptive top row is costed with: the strategy feeds it the
    shard's measured step time per `rows x (verified width + 1)` tokens."""

    top: HorizontalCascade
    drafters: list[Drafter]
    stats: EngineStats
    target_cost: SizeCost


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


def build_cascade(config: CascadeConfig, *, tokenizer, vocab_size: int, model_id: str | None = None,
                  dtype: str | None = None, speculate: int | None = None) -> Cascade:
    """Drafters in config order and the cascade that drafts for the target (k-matrix row 0).

    With `config.adaptive`, the top row's controller knows the shard verifies `speculate` ids per
    request whenever it drafts at all (TGI pads every draft), so it weighs speculation on or off.

    `from_target_layers` drafters load an HF copy of the target (from `model_id`, the shard's own
    weights) and keep only its first N layers + final norm + head: memory is about N/L of the target.
    """
    from tgi_csd import models
    from tgi_csd.builder import build_drafters, wire_cascade

    dtype = dtype or config.target.dtype
    stats = EngineStats()
    needs_target = any(isinstance(s, ModelDrafterSpec) and s.from_target_layers is not None for s in config.drafters)
    hf_target = models.load_model(resolve_target_folder(model_id, config), dtype) if needs_target else None
    drafters = build_drafters(config.drafters, hf_target, tokenizer, dtype, vocab_size,
                              kv_budget_mb=config.drafter_kv_budget_mb, cpu_kernel=config.cpu_kernel)
    # Layers past the deepest cut are referenced by nothing else once this goes.
    del hf_target
    if not drafters:
        raise ConfigError("drafters: the csd strategy needs at least one drafter; to disable speculation drop "
                          "--speculation-strategy")
    target_cost = SizeCost()
    top = wire_cascade(drafters, config.k_matrix, stats, config.adaptive, target_cost, vocab_size, speculate)
    return Cascade(top, drafters, stats, target_cost)
