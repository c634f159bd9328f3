"""The cascade configuration (one YAML file), validated by pydantic; JSON schema via `tgi-csd config schema`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tgi_csd.errors import ConfigError

#: A request's `speculation` besides the config's profiles: the k-matrix's first row, and no draft.
RESERVED_PROFILES = ("auto", "off")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

#: `cpu_kernel`: whether float32 CPU model runners use `tgi_csd.small_rows` for 2-32 token forwards.
KernelSetting = Literal["auto", "on", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetSpec(_Strict):
    model: str = Field(description="a name from `tgi-csd models list`, or a folder with safetensors weights")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="the target's and the drafters' dtype; inside TGI the drafters take the shard's "
        "dtype unless this is set"
    )
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda|xpu)(:[0-9]+)?$", description="torch device of the target and the drafters "
        "('cpu', 'cuda', 'cuda:1'); inside TGI the drafters run on the shard's device unless this is set"
    )


class ModelDrafterSpec(_Strict):
    """A neural drafter: another causal LM with the target's tokenizer, or the target's first layers."""

    type: Literal["model"]
    name: str
    model: str | None = Field(None, description="model name or folder; omit to cut the drafter from the target")
    from_target_layers: int | None = Field(
        None, ge=1, description="use the target's first N layers + its final norm and head"
    )
    adapter: str | None = Field(None, description="folder of a peft LoRA adapter (safetensors)")
    merge_adapter: bool = Field(
        True, description="fold the adapter into a private copy of the weights (fastest); false keeps it "
        "unmerged on weights shared with the target or with other drafters of the same model (least memory)"
    )
    leniency: float | None = Field(
        None, ge=1.0, description="LOSSY for this drafter's drafts (not for outputs): accept lower drafts "
        "whose probability is >= max/leniency"
    )
    sample: bool = Field(False, description="sample drafts from this model when the request samples")
    min_confidence: float | None = Field(
        None, gt=0.0, lt=1.0, description="end a row's draft before the first token this model gives less "
        "than this probability: shorter drafts of the same tokens, and no verify work where the drafter is "
        "unsure (greedy drafting only)"
    )
    prefill_chunk: int | None = Field(
        None, ge=1, description="bound on a joining request's prefill in this drafter: a row whose cache lags "
        "its sequence by more tokens than this is fed this many per step, and the drafters below draft for it "
        "until it has caught up; null = the whole prompt at once (inside TGI the default is 256)"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelDrafterSpec:
        if (self.model is None) == (self.from_target_layers is None):
            raise ValueError(
                f"drafter '{self.name}': set exactly one of `model` (a separate model) or "
                "`from_target_layers` (a draft cut from the target)"
            )
        if not self.merge_adapter and self.adapter is None:
            raise ValueError(f"drafter '{self.name}': `merge_adapter: false` needs an `adapter`")
        if self.leniency is not None and self.sample:
            raise ValueError(f"drafter '{self.name}': `leniency` applies to greedy drafting; drop it or `sample`")
        if self.min_confidence is not None and (self.leniency is not None or self.sample):
            raise ValueError(f"drafter '{self.name}': `min_confidence` applies to greedy drafting; drop it or "
                             "`leniency` / `sample`")
        return self


class SuffixStoreSpec(_Strict):
    """MaG's memory across requests (`tgi_csd.drafters.suffix_store`): the tokens of requests that finished."""

    memory_mb: float = Field(16.0, gt=0, description="the store's memory budget in MiB (2^20 bytes), never "
                             "exceeded: the oldest sequences go first")
    max_ngram: int = Field(8, ge=1, le=32, description="longest context n-gram the store indexes")
    min_ngram: int = Field(2, ge=1, description="shortest context n-gram it matches")
    min_confidence: float = Field(0.5, gt=0, le=1, description="draft only when the likeliest next token has this "
                                  "share of the (recency-weighted) counts; the draft's length scales with it")
    half_life: int = Field(1000, ge=1, description="recency: a sequence's counts weigh half after this many "
                           "later sequences")
    eviction: Literal["fifo", "lru"] = Field("fifo", description="which sequences go when the budget is full: "
                                             "the oldest stored, or the least recently drafted from")

    @model_validator(mode="after")
    def _check(self) -> SuffixStoreSpec:
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"store: min_ngram {self.min_ngram} exceeds max_ngram {self.max_ngram}")
        return self


class MaGSpec(_Strict):
    """Statistical drafter: longest suffix match over the sequence or (with `store`) over recent requests,
    then a bigram table."""

    type: Literal["mag"]
    name: str = "mag"
    bigram: str | None = Field(
        "default", description="'default' (built for the target's tokenizer), a .safetensors path, or null"
    )
    max_ngram: int = Field(12, ge=1, le=64)
    min_ngram: int = Field(1, ge=1)
    lead_ngram: int | None = Field(
        None, ge=1, description="when the sequence's suffix matches an earlier place over at least this many "
        "tokens, MaG drafts the reviewer's whole draft itself, ahead of the model drafters (a long match "
        "predicts better than a small model); null = MaG only fills the positions the k-matrix gives it"
    )
    store: SuffixStoreSpec | None = Field(
        None, description="a bounded memory of recent requests' tokens, drafted from where it knows a longer "
        "context than the request's own history; shared by every request of the engine or TGI shard: requests "
        "share token statistics through it (leave it out where requests must be isolated)"
    )

    @model_validator(mode="after")
    def _check(self) -> MaGSpec:
        if self.lead_ngram is not None and self.lead_ngram > self.max_ngram:
            raise ValueError(f"drafter '{self.name}': `lead_ngram` {self.lead_ngram} exceeds `max_ngram` "
                             f"{self.max_ngram}, so MaG would never lead; lower it or raise `max_ngram`")
        return self


class TGINGramSpec(_Strict):
    """TGI's stock first-match n-gram speculation."""

    type: Literal["tgi-ngram"]
    name: str = "ngram"


DrafterSpec = Annotated[ModelDrafterSpec | MaGSpec | TGINGramSpec, Field(discriminator="type")]


class AdaptiveSettings(_Strict):
    """How the controller steers. The k-matrix's entries become upper bounds."""

    window_steps: int = Field(64, ge=2, description="acceptance statistics forget with this horizon (steps)")
    margin: float = Field(0.05, ge=0, description="predicted gain needed before switching allocation")
    hold_steps: int = Field(8, ge=1, description="steps an allocation is kept before it may change, unless the "
                            "change turns speculation off or the batch moved to another power-of-two size")
    probe_every: int = Field(32, ge=2, description="right after warmup and then at most every N steps, measure an "
                             "alternative (off while on, the best speculative allocation while off)")
    probe_budget: float = Field(0.02, gt=0, le=1, description="a probe waits until its predicted extra time over "
                                "the current allocation is at most this fraction of the time since the last "
                                "probe, so probing an expensive allocation at a large batch stays rare")
    warmup_steps: int = Field(1, ge=0, description="steps drafting one token (from the first drafter) before "
                              "steering, where costs are not calibrated (the TGI shard's)")
    calibrate: bool = Field(True, description="the engine times its models' forwards in the shapes the controllers "
                            "weigh (rows x tokens) when it starts (half a minute for SmolLM2-135M on a 2-core CPU), "
                            "so the first steps are priced, not guessed; live timings then replace the "
                            "calibration's shape by shape")


class CascadeConfig(_Strict):
    """Target, drafters from largest to smallest, and the k-matrix.

    `k_matrix[r][c]`: how many draft positions drafter `c` fills (after drafters `0..c-1`) when
    reviewer `r` asks for a draft. Reviewer 0 is the target, reviewer `r >= 1` is the `r`-th
    model drafter. A reviewer only uses drafters listed after itself (smaller ones).
    """

    target: TargetSpec
    drafters: list[DrafterSpec] = Field(default_factory=list, description="largest first; empty = no speculation")
    k_matrix: list[list[int]]
    adaptive: AdaptiveSettings | None = Field(
        None, description="steer the k-matrix online (its entries become upper bounds; 0 = speculation off)"
    )
    cpu_kernel: KernelSetting = Field(
        "auto", description="float32 models on the CPU: run the linear layers of 2-32 token forwards (verify "
        "steps) with tgi-csd's AVX2 kernel, built with g++ on first use; 'auto' falls back to torch's linear "
        "(with a warning) where it cannot build, 'on' makes that an error, 'off' never uses it. Results differ "
        "from torch's by float32 rounding only; the target's one-token forwards are untouched (a drafter's, "
        "whose tokens are only proposals, take the kernel too)"
    )
    drafter_kv_budget_mb: float | None = Field(
        None, gt=0, description="cap on the KV cache memory of all model drafters together, in MiB (2^20 bytes), "
        "split so that each drafter holds as many tokens; beyond it the least recently used sequences' "
        "drafter caches are dropped and rebuilt when needed (outputs unchanged); null = no cap"
    )

    profiles: dict[str, list[int]] = Field(
        default_factory=dict, description="speculation profiles a request may choose by name (besides 'auto', "
        "the k-matrix's first row, and 'off', no draft): each is another first row of the k-matrix, one entry per "
        "drafter, e.g. `long: [3, 3]` next to `mag-only: [0, 4]`; the drafters below keep the k-matrix's other rows"
    )

    target_kv_budget_mb: float | None = Field(
        None, gt=0, description="cap on the target's KV cache memory in MiB (2^20 bytes), for the engine (inside "
        "TGI the shard sizes its own): a waiting request joins only when the buffers, sized for every live "
        "request's longest possible sequence, stay within it (first come, first served); a request that alone "
        "needs more is refused; null = no cap"
    )

    @property
    def model_drafters(self) -> list[ModelDrafterSpec]:
        return [d for d in self.drafters if isinstance(d, ModelDrafterSpec)]

    @model_validator(mode="after")
    def _check(self) -> CascadeConfig:
        names = [d.name for d in self.drafters]
        if len(set(names)) != len(names):
            raise ValueError(f"drafters: names must be unique, got {names}")
        kinds = [isinstance(d, ModelDrafterSpec) for d in self.drafters]
        if kinds != sorted(kinds, reverse=True):
            raise ValueError("drafters: list model drafters first (largest first), statistical drafters last")
        rows = 1 + sum(kinds)
        if len(self.k_matrix) != rows:
            raise ValueError(
                f"k_matrix: needs {rows} rows (the target, then one per model drafter), got {len(self.k_matrix)}"
            )
        for r, row in enumerate(self.k_matrix):
            if len(row) != len(names):
                raise ValueError(
                    f"k_matrix: row {r} has {len(row)} entries; it needs {len(names)}, one per drafter {names}"
                )
            if any(k < 0 for k in row):
                raise ValueError(f"k_matrix: row {r} has a negative entry {row}; use 0 for 'not used'")
            for c in range(r):
                if row[c]:
                    reviewer = "the target" if r == 0 else f"drafter '{names[r - 1]}'"
                    raise ValueError(
                        f"k_matrix: row {r} ({reviewer}) gives {row[c]} positions to '{names[c]}', which is not "
                        "smaller than the reviewer; set it to 0"
                    )
        for c, name in enumerate(names):
            if not any(row[c] for row in self.k_matrix) and not any(row[c] for row in self.profiles.values()):
                raise ValueError(f"k_matrix: drafter '{name}' is never used; give it a positive entry or remove it")
        for profile, row in self.profiles.items():
            if profile in RESERVED_PROFILES or not PROFILE_NAME.fullmatch(profile):
                raise ValueError(f"profiles: {profile!r} is not a profile name; use letters, digits, '-' or '_', "
                                 f"not {' or '.join(map(repr, RESERVED_PROFILES))}")
            if len(row) != len(names) or any(k < 0 for k in row):
                raise ValueError(f"profiles.{profile}: {row} needs {len(names)} entries >= 0, one per drafter "
                                 f"{names}")
        return self

    def speculation_choices(self) -> list[str]:
        """What a request's `speculation` may name."""
        return [*RESERVED_PROFILES, *self.profiles]


def _format(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "union_tag_invalid":
            message = f"unknown drafter type {e['input'].get('type')!r}; use one of: model, mag, tgi-ngram"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_config(data: object, source: str = "config") -> CascadeConfig:
    try:
        return CascadeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_format(error)}") from None


def read_yaml(path: Path, option: str) -> object:
    """The parsed YAML file, or one error naming `option` (unreadable file, invalid YAML)."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{option}: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{option}: {path} is not valid YAML: {error}") from None


def load_config(path: str | Path) -> CascadeConfig:
    path = Path(path)
    return parse_config(read_yaml(path, "--config"), str(path))
