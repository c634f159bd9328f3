"""The models every benchmarked method shares, loaded once; fresh engines are built over them."""

from __future__ import annotations

from transformers import PreTrainedModel

from tgi_csd import models
from tgi_csd.builder import DrafterAssets, build_session
from tgi_csd.config import CascadeConfig
from tgi_csd.engine import Calibration, Engine
from tgi_csd.prompts import Prompt, encode_prompt
from tgi_csd.runner import ModelRunner
from tgi_csd.small_rows import resolve


class BenchModels:
    """The config's target and tokenizer, and its drafters' assets (HF models, bigram tables), loaded once.

    Invariant: models are shared and only read; every `engine()` is built by `builder.build_session`, as
    `Engine.from_config` and the TGI strategy build theirs, with its own runners, KV caches and drafter
    state, so no two engines share a cache and every config key means the same here.
    """

    def __init__(self, config: CascadeConfig) -> None:
        folder = models.resolve_model(config.target.model)
        self.config = config
        self.tokenizer = models.load_tokenizer(folder)
        self.target: PreTrainedModel = models.load_model(folder, config.target.dtype, config.target.device)
        self.vocab = self.target.get_output_embeddings().weight.shape[0]
        self.assets = DrafterAssets.load(config.drafters, self.target, self.tokenizer, config.target.dtype,
                                         self.vocab, config.target.device)
        self.engine_cpu_kernel = resolve(config.cpu_kernel, self.target.device, self.target.dtype) is not None
        self._calibrations: dict[tuple[str, ...], Calibration] = {}

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def encode(self, prompt: Prompt, chat: bool = False) -> list[int]:
        """`prompt`'s ids, through the chat template where it is a chat or `chat` is set."""
        return encode_prompt(self.tokenizer, prompt, chat)

    def engine(self, cascade: CascadeConfig) -> Engine:
        """A fresh engine (zeroed stats, empty caches, new controllers when `cascade.adaptive`) for
        `cascade`, a config over (a subset of) this config's drafters. An adaptive engine's calibration is timed
        once per set of models (target kernel setting, model drafters) and reused by the later engines over
        the same set, as a server calibrates once when it starts."""
        target = ModelRunner(self.target, "target", cascade.cpu_kernel)
        session = build_session(cascade, self.assets, self.vocab, target_cost=target.cost)
        key = (cascade.cpu_kernel, *(spec.model_dump_json() for spec in cascade.model_drafters))
        engine = Engine(target, session, self.tokenizer, calibration=self._calibrations.get(key))
        if engine.calibration is not None:
            self._calibrations[key] = engine.calibration
        return engine
