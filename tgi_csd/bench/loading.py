"""The models every benchmarked method shares, loaded once; fresh engines are assembled over them."""

from __future__ import annotations

from transformers import PreTrainedModel

from tgi_csd import models
from tgi_csd.builder import bigram_table, model_drafter
from tgi_csd.config import CascadeConfig, DrafterSpec, KernelSetting, MaGSpec, ModelDrafterSpec
from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.engine import Engine
from tgi_csd.runner import ModelRunner
from tgi_csd.small_rows import resolve


class BenchModels:
    """The config's target, tokenizer and neural drafters (HF models by drafter name), plus MaG bigram tables.

    Invariant: models are shared and only read; every `engine()` gets its own runners and drafter
    state, so no two engines share a KV cache.
    """

    def __init__(self, config: CascadeConfig) -> None:
        folder = models.resolve_model(config.target.model)
        self.config = config
        self.tokenizer = models.load_tokenizer(folder)
        self.target: PreTrainedModel = models.load_model(folder, config.target.dtype)
        self.vocab = self.target.get_output_embeddings().weight.shape[0]
        # Built and checked exactly as `Engine.from_config` does; only the HF model is kept.
        self.drafter_models: dict[str, PreTrainedModel] = {
            spec.name: model_drafter(spec, self.target, self.tokenizer, config.target.dtype, self.vocab).runner.model
            for spec in config.model_drafters
        }
        self._bigrams: dict[str | None, BigramTable | None] = {}
        self.engine_cpu_kernel = resolve(config.cpu_kernel, self.target.device, self.target.dtype) is not None

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt).input_ids

    def bigram(self, source: str | None) -> BigramTable | None:
        """MaG's bigram table as `MaGSpec.bigram` names it (loaded or built once)."""
        if source not in self._bigrams:
            self._bigrams[source] = bigram_table(source, self.tokenizer, self.vocab)
        return self._bigrams[source]

    def _drafter(self, spec: DrafterSpec, cpu_kernel: KernelSetting) -> Drafter:
        if isinstance(spec, ModelDrafterSpec):
            runner = ModelRunner(self.drafter_models[spec.name], spec.name, cpu_kernel)
            return ModelDrafter(spec.name, runner, spec.leniency, spec.sample, spec.min_confidence)
        if isinstance(spec, MaGSpec):
            return MaGDrafter(self.bigram(spec.bigram), spec.name, spec.max_ngram, spec.min_ngram, spec.lead_ngram)
        return TGINGramDrafter(spec.name)

    def engine(self, cascade: CascadeConfig) -> Engine:
        """A fresh engine (zeroed stats, empty caches, new controllers when `cascade.adaptive`) for
        `cascade`, whose model drafters are the config's."""
        drafters = [self._drafter(spec, cascade.cpu_kernel) for spec in cascade.drafters]
        target = ModelRunner(self.target, "target", cascade.cpu_kernel)
        return Engine.assemble(target, drafters, cascade.k_matrix, self.tokenizer, adaptive=cascade.adaptive)
