"""Draft adapters: applying a peft LoRA adapter, the metadata binding it to its target, reduced draft heads."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from tgi_csd import small_rows
from tgi_csd.errors import ConfigError, reading
from tgi_csd.models import share_weights, tokenizer_fingerprint

METADATA_FILE = "tgi_csd_adapter.json"
VOCAB_FILE = "draft_vocab.safetensors"


class AdapterMetadata(BaseModel):
    """What an adapter was distilled for. `target` is `target_fingerprint` of that target."""

    model_config = ConfigDict(extra="allow")

    target: str
    from_target_layers: int | None = None
    draft_model: str | None = None
    draft_vocab_size: int | None = None


def target_fingerprint(model: PreTrainedModel, tokenizer) -> str:
    """Architecture, tokenizer and output-embedding weights: equal only for the same target."""
    config = model.config
    shape = {key: getattr(config, key, None) for key in (
        "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "intermediate_size")}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    digest.update(model.get_output_embeddings().weight.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def write_metadata(folder: Path, metadata: AdapterMetadata) -> None:
    (folder / METADATA_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")


def read_metadata(folder: Path) -> AdapterMetadata | None:
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    with reading("adapter", path, "distill the adapter again with `tgi-csd distill`"):
        return AdapterMetadata.model_validate_json(path.read_text())


def check_adapter(folder: Path, fingerprint: str, from_target_layers: int | None) -> AdapterMetadata:
    """Refuse an adapter distilled for another target or another draft shape, or one that does not say
    which target it was distilled for."""
    metadata = read_metadata(folder)
    if metadata is None:
        raise ConfigError(
            f"adapter: {folder} has no {METADATA_FILE}, so nothing binds it to this target; use an adapter made "
            "by `tgi-csd distill` (it writes that file), or bind one trained for this target with `tgi-csd adapter "
            "bind --adapter DIR --target MODEL [--from-target-layers N]`"
        )
    if metadata.target != fingerprint:
        raise ConfigError(
            f"adapter: {folder} was distilled for another target (fingerprint {metadata.target}, this target "
            f"{fingerprint}); distill one for this target with `tgi-csd distill`"
        )
    if metadata.from_target_layers != from_target_layers:
        raise ConfigError(
            f"adapter: {folder} was distilled for a draft of {metadata.from_target_layers} target layers; "
            f"set from_target_layers: {metadata.from_target_layers}"
        )
    return metadata


class ReducedHead(nn.Module):
    """An LM head over a subset of the vocabulary (FR-Spec): logits of the kept tokens, -inf elsewhere.

    Invariant: outputs keep the full vocabulary width, so argmax and verification see real token ids;
    a token outside the subset is never proposed and never accepted by this drafter.
    """

    def __init__(self, full_head: nn.Linear, token_ids: torch.Tensor) -> None:
        super().__init__()
        self.vocab_size = full_head.weight.shape[0]
        self.register_buffer("token_ids", token_ids.long().to(full_head.weight.device), persistent=False)
        self.weight = nn.Parameter(full_head.weight.detach()[token_ids].clone(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = small_rows.linear(hidden, self.weight)  # the CPU kernel inside a runner's forward that uses it
        out = small.new_full((*small.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.token_ids, small)


def restrict_head(model: PreTrainedModel, token_ids: torch.Tensor) -> PreTrainedModel:
    """Swap the model's LM head for a `ReducedHead` over `token_ids` (the model must be a private copy)."""
    model.lm_head = ReducedHead(model.get_output_embeddings(), token_ids)
    return model


def save_vocab(folder: Path, token_ids: torch.Tensor) -> None:
    save_file({"token_ids": token_ids.to(torch.int64).contiguous()}, str(folder / VOCAB_FILE))


def load_vocab(folder: Path, vocab_size: int) -> torch.Tensor | None:
    """The draft vocabulary saved with the adapter (ids in `[0, vocab_size)`), or None when there is none."""
    path = folder / VOCAB_FILE
    if not path.is_file():
        return None
    with reading("adapter", path, "distill the adapter again with `tgi-csd distill --draft-vocab`"):
        token_ids = load_file(str(path))["token_ids"]
        if token_ids.dim() != 1 or token_ids.dtype != torch.int64 or not len(token_ids):
            raise ValueError(f"token_ids must be a non-empty int64 vector, not {token_ids.dtype} "
                             f"{tuple(token_ids.shape)}")
        if int(token_ids.min()) < 0 or int(token_ids.max()) >= vocab_size:
            raise ValueError(f"token ids outside the target's vocabulary [0, {vocab_size})")
    return token_ids


def apply_adapter(model: PreTrainedModel, adapter: str, target_fingerprint: str | None = None,
                  from_target_layers: int | None = None, merge: bool = True) -> PreTrainedModel:
    """A peft LoRA adapter on `model`, which itself is never modified.

    `merge`: folded into a private copy of the weights (fastest forward). Otherwise kept unmerged on
    a `share_weights` view, so drafters that share one base (the target's layers, or one loaded
    model) each add only their LoRA weights. With `target_fingerprint`, an adapter whose tgi-csd
    metadata names another target or draft shape is refused; a reduced draft vocabulary saved with
    the adapter replaces the LM head.
    """
    folder = Path(adapter).expanduser()
    if not folder.is_dir() or not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"adapter: {folder} is not a peft adapter folder (no adapter_config.json)")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"adapter: {folder} has no adapter_model.safetensors; save it with safe_serialization")
    if target_fingerprint is not None:
        check_adapter(folder, target_fingerprint, from_target_layers)
    fix = "distill the adapter again with `tgi-csd distill` (or copy it whole)"
    with reading("adapter", folder / "adapter_config.json", fix):
        json.loads((folder / "adapter_config.json").read_text())
    with reading("adapter", weights, fix):
        load_file(str(weights))  # reads every tensor: a truncated file fails here, by name
    from peft import PeftModel

    try:
        if merge:
            adapted = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).merge_and_unload()
        else:
            adapted = PeftModel.from_pretrained(share_weights(model), str(folder)).get_base_model()
    except (ValueError, RuntimeError, KeyError) as error:
        raise ConfigError(f"adapter: {folder} does not fit this drafter ({error}); check its rank and "
                          "target modules, or distill it for this draft") from None
    vocab = load_vocab(folder, model.get_output_embeddings().weight.shape[0])
    if vocab is not None:
        restrict_head(adapted, vocab)
    return adapted.eval()
