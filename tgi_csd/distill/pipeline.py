"""The distillation pipeline: data from the target, LoRA training, the adapter folder and its report."""

from __future__ import annotations

import contextlib
import json
import random
import resource
import time
from dataclasses import asdict
from pathlib import Path

import torch

from tgi_csd import adapters, models
from tgi_csd.distill.data import Example, continuations, label
from tgi_csd.distill.train import DistillSettings, acceptance, draft_forward, draft_head, frequent_tokens, make_draft
from tgi_csd.distill.train import train as train_lora
from tgi_csd.errors import ConfigError, reading
from tgi_csd.prompts import encode_prompt, load_prompts

DATASET = "dataset.pt"
REPORT = "distill_report.json"
#: a prompt source written `chat:SOURCE` puts its text prompts in the chat template (a mixed corpus: code raw,
#: chat templated)
CHAT_PREFIX = "chat:"
#: the held-out set's name when it is a random fraction of --prompts
HELD_OUT = "held-out fraction of --prompts"


def parse_draft(spec: str) -> tuple[int | None, str | None]:
    """`layers:N` (the target's first N layers) or a model name/folder."""
    if spec.startswith("layers:"):
        try:
            return int(spec.removeprefix("layers:")), None
        except ValueError:
            raise ConfigError(f"--draft: {spec!r}: use layers:N with an integer N") from None
    return None, spec


def init_settings(init: Path, settings: DistillSettings) -> DistillSettings:
    """`settings` with the rank, alpha and target modules of the adapter `init` (training continues from it)."""
    with reading("--init-adapter", init / "adapter_config.json", "pass a peft adapter folder made by tgi-csd distill"):
        config = json.loads((init / "adapter_config.json").read_text())
    return settings.model_copy(update={"rank": config["r"], "alpha": float(config["lora_alpha"]),
                                       "target_modules": sorted(config["target_modules"])})


def run(target_spec: str, draft_spec: str, prompt_specs: list[str], out: Path, settings: DistillSettings,
        resume: bool = False, val_specs: list[str] | None = None, device: str = "cpu", chat: bool = False,
        init_adapter: Path | None = None) -> dict:
    """Distill on `device`, save the adapter folder into `out`, and return the report (also
    `out/distill_report.json`). Each `val_specs` entry is a held-out set the report scores on its own (its
    agreement before and after), beside all of them together; text prompts go through the target's chat
    template when `chat` or when their source is written `chat:SOURCE`, chats (`messages`) always. With
    `init_adapter` (an adapter bound to this target and draft) training starts from its LoRA weights, with its
    rank, alpha and modules; "before" is that adapter."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    layers, draft_model = parse_draft(draft_spec)
    target_dir = models.resolve_model(target_spec)
    tokenizer = models.load_tokenizer(target_dir)
    target = models.load_model(target_dir).to(device)
    if layers is not None:
        base = models.cut_from_target(target, layers)
    else:
        base = models.load_model(models.resolve_model(draft_model)).to(device)
        if base.get_output_embeddings().weight.shape[0] != target.get_output_embeddings().weight.shape[0]:
            raise ConfigError(f"--draft: {draft_model} has another vocabulary than the target")
    if init_adapter is not None:
        try:
            adapters.check_adapter(init_adapter, adapters.target_fingerprint(target, tokenizer), layers)
        except ConfigError as error:
            raise ConfigError(f"--init-adapter: {str(error).removeprefix('adapter: ')}") from None
        settings = init_settings(init_adapter, settings)
    draft = make_draft(base, settings, init_adapter)
    out.mkdir(parents=True, exist_ok=True)

    dataset_path = out / DATASET
    if resume and dataset_path.is_file():
        with reading("--resume", dataset_path, f"delete {dataset_path} to label the prompts again"):
            saved = torch.load(dataset_path, weights_only=True)
            train_set, val_set = ([Example(**e) for e in part] for part in saved[:2])
            val_groups = saved[2] if len(saved) > 2 else [HELD_OUT] * len(val_set)
    else:
        def tokenized(spec: str, option: str) -> list[list[int]]:
            templated = chat or spec.startswith(CHAT_PREFIX)
            ids = [encode_prompt(tokenizer, p, templated) for p in load_prompts(spec.removeprefix(CHAT_PREFIX), option)]
            return [i for i in ids if i]

        train_ids = [ids for spec in prompt_specs for ids in tokenized(spec, "--prompts")]
        if val_specs:
            by_set = {spec: tokenized(spec, "--val-prompts") for spec in dict.fromkeys(val_specs)}
        else:  # hold out a random fraction
            random.Random(settings.seed).shuffle(train_ids)
            held_out = max(1, int(len(train_ids) * settings.val_fraction))
            by_set, train_ids = {HELD_OUT: train_ids[:held_out]}, train_ids[held_out:]
        val_count = sum(map(len, by_set.values()))
        if not train_ids or not val_count:
            raise ConfigError("--prompts: need at least 2 non-empty prompts (some for training, some held out)")
        with Progress(TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
            progress.add_task(f"target continuations for {len(train_ids)} + {val_count} prompts", total=None)
            val_pairs, val_groups = [], []  # a prompt whose continuation is empty drops out: groups follow pairs
            for name, ids in by_set.items():
                pairs = continuations(target, tokenizer, ids, settings.new_tokens, 0, settings.seed,
                                      settings.generate_batch_size)
                val_pairs += pairs
                val_groups += [name] * len(pairs)
            train_pairs = continuations(target, tokenizer, train_ids, settings.new_tokens,
                                        settings.samples_per_prompt, settings.seed, settings.generate_batch_size)
            progress.add_task("target top-k logits", total=None)
            val_set = label(target, val_pairs, settings.context, settings.top_k)
            train_set = label(target, train_pairs, settings.context, settings.top_k)
        torch.save([*([asdict(e) for e in part] for part in (train_set, val_set)), val_groups], dataset_path)

    vocab_ids = None
    if settings.draft_vocab is not None:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        vocab_ids = frequent_tokens(train_set, settings.draft_vocab, eos)
    head = draft_head(draft, vocab_ids)
    sets = {name: [e for e, group in zip(val_set, val_groups) if group == name] for name in dict.fromkeys(val_groups)}
    with contextlib.nullcontext() if init_adapter is not None else draft.disable_adapter():
        before = acceptance(draft_forward(draft, head), val_set, device=device)
        before_by_set = {name: acceptance(draft_forward(draft, head), part, device=device)
                         for name, part in sets.items()}
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"),
               TextColumn("held-out agreement {task.fields[agreement]:.1%}"),
               TimeElapsedColumn()]
    with Progress(*columns) as progress:
        history = train_lora(draft, train_set, val_set, settings, out, vocab_ids, progress, resume)
    after = acceptance(draft_forward(draft, head), val_set, device=device)
    held_out = {name: {"sequences": len(part), "before": before_by_set[name].as_dict(),
                       "after": acceptance(draft_forward(draft, head), part, device=device).as_dict()}
                for name, part in sets.items()}

    draft.save_pretrained(out, safe_serialization=True)
    if vocab_ids is not None:
        adapters.save_vocab(out, vocab_ids)
    adapters.write_metadata(out, adapters.AdapterMetadata(
        target=adapters.target_fingerprint(target, tokenizer), from_target_layers=layers, draft_model=draft_model,
        draft_vocab_size=None if vocab_ids is None else len(vocab_ids)))
    report = {
        "target": target_spec, "draft": draft_spec, "settings": settings.model_dump(),
        "init_adapter": None if init_adapter is None else str(init_adapter),
        "train_sequences": len(train_set), "held_out_sequences": len(val_set),
        "chat_template": chat, "before": before.as_dict(), "after": after.as_dict(), "held_out": held_out,
        "history": history,
        "device": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu",
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report
