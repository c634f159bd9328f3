"""The benchmarked methods: transformers `generate` (`ar`, `hf-assisted`, `hf-prompt-lookup`) and our
engine over cascades derived from the config (`nospec`, `ngram`, `sd`, `mag`, `csd`, `csd-adaptive`,
`csd-lenient`, k-sweep points).

Every method decodes greedily and returns, per prompt, the token ids after the prompt through EOS
(or `max_new_tokens` of them), so outputs compare one to one with the reference.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from tgi_csd.bench.loading import BenchModels
from tgi_csd.config import (
    AdaptiveSettings,
    CascadeConfig,
    DrafterSpec,
    MaGSpec,
    ModelDrafterSpec,
    TGINGramSpec,
    parse_config,
)
from tgi_csd.engine import Request
from tgi_csd.errors import ConfigError


@dataclass
class Run:
    """One method over the whole prompt set at one batch size."""

    outputs: list[list[int]]
    #: walltime inside the generate calls (setup excluded)
    seconds: float
    target_forwards: int
    target_seconds: float
    drafter_forwards: dict[str, int]
    drafter_seconds: float
    #: the engine's draft acceptance per "drafter->reviewer" pair; empty for transformers methods
    drafts: dict = field(default_factory=dict)
    #: an adaptive cascade's `steps`, `speculation_off_steps` and final `current_k` (engine.report()); else None
    adaptive: dict | None = None
    #: on CUDA, the most device memory allocated during the run (models included); else None
    peak_memory_bytes: int | None = None


class Method(ABC):
    """Greedy generation of a prompt set in consecutive batches of `batch_size` prompts.

    `k`: draft tokens per target forward (0: none; None: adaptive). `batched`: False when the
    method only takes batch size 1.
    """

    name: str
    k: int | None
    batched: bool = True

    @abstractmethod
    def start(self, max_new_tokens: int) -> Session:
        """A fresh pass over a prompt set (a new engine, zeroed counters), fed batch by batch."""

    def run(self, prompts: list[list[int]], batch_size: int, max_new_tokens: int) -> Run:
        """The whole prompt set in batches of `batch_size`, outputs in prompt order."""
        session = self.start(max_new_tokens)
        for chunk in batches(prompts, batch_size):
            session.generate(chunk)
        return session.finish()


class Session(ABC):
    """One method's pass over a prompt set at one batch size. Batches may be fed with other methods' batches in
    between (the bench interleaves them); what a method keeps across its batches (an engine, its controllers)
    lives here. Only `generate` is timed."""

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens
        self.outputs: list[list[int]] = []
        self.seconds = 0.0

    def generate(self, chunk: list[list[int]]) -> None:
        """Generate for one batch; its outputs follow the earlier batches'."""
        start = time.perf_counter()
        outputs = self._generate(chunk)
        self.seconds += time.perf_counter() - start
        self.outputs.extend(outputs)

    @abstractmethod
    def _generate(self, chunk: list[list[int]]) -> list[list[int]]:
        """The outputs of one batch, in its order."""

    @abstractmethod
    def finish(self) -> Run:
        """The pass so far as a `Run`."""


@dataclass(frozen=True)
class NotApplicable:
    """A requested method this config cannot run, and why."""

    name: str
    reason: str


def batches(prompts: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    for start in range(0, len(prompts), size):
        yield prompts[start:start + size]


class _ForwardMeter:
    """Counts the calls of one module and the seconds spent in them (forward hooks), summed over every time it
    is entered: hooked only while entered, so meters of interleaved methods never count each other's calls."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.calls = 0
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> _ForwardMeter:
        self._handles = [self.module.register_forward_pre_hook(self._pre),
                         self.module.register_forward_hook(self._post)]
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _pre(self, *_: object) -> None:
        self._start = time.perf_counter()

    def _post(self, *_: object) -> None:
        self.calls += 1
        self.seconds += time.perf_counter() - self._start


class HFGenerate(Method):
    """transformers `generate` with the target, greedy, KV cache on: alone (`ar`, batches left-padded),
    with an assistant model (`hf-assisted`) or with prompt lookup (`hf-prompt-lookup`).

    The assistant's generation config is restored before every call, so each call starts from the
    same draft length (transformers may adapt it across calls). Only valid kwargs of both transformers
    4.51 and 5.x are passed.
    """

    def __init__(self, name: str, models: BenchModels, k: int | None, *, prompt_lookup: int | None = None,
                 assistant: tuple[str, PreTrainedModel] | None = None) -> None:
        self.name = name
        self.k = k
        self.target = models.target
        self.eos = models.eos_token_id
        self.pad = self.eos if self.eos is not None else 0
        self.extra: dict = {} if prompt_lookup is None else {"prompt_lookup_num_tokens": prompt_lookup}
        self.drafters: dict[str, PreTrainedModel] = {}
        if assistant is not None:
            drafter_name, model = assistant
            self.drafters[drafter_name] = model
            self.assistant_config = copy.deepcopy(model.generation_config)
            if k is not None:
                self.assistant_config.num_assistant_tokens = k
        # transformers' candidate generators take one sequence at a time
        self.batched = not self.extra and assistant is None

    def generate(self, chunk: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """One batch's outputs, left-padded into one `generate` call."""
        width = max(len(p) for p in chunk)
        device = self.target.device
        input_ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        extra = dict(self.extra)
        for model in self.drafters.values():
            model.generation_config = copy.deepcopy(self.assistant_config)
            extra["assistant_model"] = model
        out = self.target.generate(
            input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=self.eos, pad_token_id=self.pad, temperature=None, top_p=None, top_k=None, **extra,
        )
        return [_through_eos(row[width:].tolist(), self.eos) for row in out]

    def start(self, max_new_tokens: int) -> Session:
        return _HFSession(self, max_new_tokens)


class _HFSession(Session):
    """Forward meters on the shared models, hooked only while this session generates."""

    def __init__(self, method: HFGenerate, max_new_tokens: int) -> None:
        super().__init__(max_new_tokens)
        self.method = method
        self.target = _ForwardMeter(method.target)
        self.drafters = {name: _ForwardMeter(model) for name, model in method.drafters.items()}

    def _generate(self, chunk: list[list[int]]) -> list[list[int]]:
        with ExitStack() as stack:
            for meter in (self.target, *self.drafters.values()):
                stack.enter_context(meter)
            return self.method.generate(chunk, self.max_new_tokens)

    def finish(self) -> Run:
        return Run(self.outputs, self.seconds, self.target.calls, self.target.seconds,
                   {name: m.calls for name, m in self.drafters.items()}, sum(m.seconds for m in self.drafters.values()))


def _through_eos(tokens: list[int], eos: int | None) -> list[int]:
    """Generated tokens up to and including the first EOS (the padding after it dropped)."""
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


class EngineMethod(Method):
    """Our engine with one cascade; a fresh engine (zeroed stats, empty caches, untrained
    controllers) per session, kept over all its batches. `k` is None when the cascade is adaptive."""

    def __init__(self, name: str, models: BenchModels, cascade: CascadeConfig) -> None:
        self.name = name
        self.models = models
        self.cascade = cascade
        self.k = None if cascade.adaptive else sum(cascade.k_matrix[0])

    def start(self, max_new_tokens: int) -> Session:
        return _EngineSession(self, max_new_tokens)


class _EngineSession(Session):
    """An engine built (and calibrated, when adaptive) before the first batch, kept over all of them."""

    def __init__(self, method: EngineMethod, max_new_tokens: int) -> None:
        super().__init__(max_new_tokens)
        self.adaptive = method.cascade.adaptive is not None
        self.engine = method.models.engine(method.cascade)

    def _generate(self, chunk: list[list[int]]) -> list[list[int]]:
        results = self.engine.generate([Request(prompt_ids=p, max_new_tokens=self.max_new_tokens) for p in chunk])
        return [r.token_ids for r in results]

    def finish(self) -> Run:
        report = self.engine.report()
        adaptive = ({key: report[key] for key in ("steps", "speculation_off_steps", "current_k")}
                    if self.adaptive else None)
        return Run(self.outputs, self.seconds, report["target_forwards"], report["seconds"]["target_forwards"],
                   dict(report["drafter_forwards"]), sum(report["seconds"]["drafters"].values()), report["drafts"],
                   adaptive)


def derive(config: CascadeConfig, name: str, drafters: list[DrafterSpec], k_matrix: list[list[int]]) -> CascadeConfig:
    """The config's target with other drafters and k-matrix (static), validated like a config file."""
    data = {"target": config.target.model_dump(), "drafters": [d.model_dump() for d in drafters],
            "k_matrix": k_matrix}
    return parse_config(data, source=f"method {name}")


def no_speculation(config: CascadeConfig) -> CascadeConfig:
    """The config's target alone through the engine: the no-speculation baseline on the same code path."""
    return derive(config, "nospec", [], [[]])


def static_cascade(config: CascadeConfig) -> CascadeConfig:
    """The config's cascade with its k-matrix fixed (any `adaptive` section dropped)."""
    return config.model_copy(update={"adaptive": None})


def adaptive_cascade(config: CascadeConfig) -> CascadeConfig:
    """The config's cascade steered online within its k-matrix: its own `adaptive` settings, else the defaults."""
    return config.model_copy(update={"adaptive": config.adaptive or AdaptiveSettings()})


def build_methods(names: list[str], models: BenchModels, ks: dict[str, int], single_drafter: str | None,
                  leniency: float) -> list[Method | NotApplicable]:
    """The named methods for `models.config`, in `names` order.

    Draft lengths: `ks[name]` where given, else the cascade's (the sum of the k-matrix's first row;
    4 for a cascade without drafters), so by default every method verifies as many draft tokens per
    target forward as `csd`; `hf-assisted` without `ks` keeps transformers' own schedule. `sd` and
    `hf-assisted` use one model drafter, `single_drafter` (default: the largest); `csd-lenient` is
    `csd` with `leniency` on every model drafter. `csd` is the config's k-matrix, static;
    `csd-adaptive` steers within it (`adaptive_cascade`); `nospec` is the engine without drafters.
    """
    config = models.config
    default_k = sum(config.k_matrix[0]) or 4
    specs = config.model_drafters
    if single_drafter is not None and single_drafter not in models.assets.models:
        raise ConfigError(f"--single-drafter: no model drafter {single_drafter!r} in the config; "
                          f"model drafters: {', '.join(models.assets.models) or 'none'}")
    single = next((s for s in specs if s.name == single_drafter), specs[0] if specs else None)
    mag = next((d for d in config.drafters if isinstance(d, MaGSpec)), MaGSpec(type="mag"))

    def make(name: str) -> Method | NotApplicable:
        k = ks.get(name, default_k)
        if name == "ar":
            return HFGenerate(name, models, 0)
        if name == "nospec":
            return EngineMethod(name, models, no_speculation(config))
        if name == "hf-prompt-lookup":
            return HFGenerate(name, models, k, prompt_lookup=k)
        if name == "ngram":
            return EngineMethod(name, models, derive(config, name, [TGINGramSpec(type="tgi-ngram")], [[k]]))
        if name == "mag":
            return EngineMethod(name, models, derive(config, name, [mag], [[k]]))
        if name == "csd":
            return EngineMethod(name, models, static_cascade(config))
        if name == "csd-adaptive":
            return EngineMethod(name, models, adaptive_cascade(config))
        if single is None:
            return NotApplicable(name, "no model drafter in the config")
        if name == "hf-assisted":
            return HFGenerate(name, models, ks.get(name), assistant=(single.name, models.assets.models[single.name]))
        if name == "sd":
            return EngineMethod(name, models, derive(config, name, [single], [[k], [0]]))
        # csd-lenient
        lenient = [s.model_copy(update={"leniency": leniency, "sample": False})
                   if isinstance(s, ModelDrafterSpec) else s for s in config.drafters]
        return EngineMethod(name, models, derive(config, name, lenient, config.k_matrix))

    return [make(name) for name in names]
