"""The `tgi-csd distill` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tgi_csd.errors import ConfigError


def distill_command(
    target: Annotated[str, typer.Option(help="target model: a name from `tgi-csd models list` or a folder")],
    draft: Annotated[str, typer.Option(help="layers:N (the target's first N layers) or a model with its tokenizer")],
    prompts: Annotated[list[str], typer.Option(
        help="prompt file (.jsonl with `prompt` or `messages`, or text lines) or humaneval[:START:STOP]; "
        "repeatable: a mixed corpus is several; chat:FILE puts that file's text prompts in the chat template")],
    out: Annotated[Path, typer.Option(help="adapter folder to write")],
    val_prompts: Annotated[
        list[str] | None,
        typer.Option(help="held-out prompts (same forms as --prompts; repeatable: the report scores each set on "
                          "its own); default: a random --val-fraction of --prompts"),
    ] = None,
    chat: Annotated[bool, typer.Option(
        help="put every text prompt in the target's chat template as a user turn (`messages` always are; "
        "chat:FILE does it for one source)")] = False,
    rank: int = 16,
    alpha: float = 32.0,
    target_modules: Annotated[str | None, typer.Option(help="comma list; default all attention + MLP")] = None,
    steps: int = 150,
    batch_size: int = 8,
    lr: float = 2e-3,
    kl_weight: float = 1.0,
    ce_weight: float = 0.5,
    new_tokens: int = 64,
    samples_per_prompt: int = 0,
    generate_batch_size: Annotated[int, typer.Option(help="continuations the target generates at once")] = 16,
    val_fraction: float = 0.2,
    draft_vocab: Annotated[int | None, typer.Option(help="reduced draft head: the V' most frequent tokens")] = None,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoint and OUT/dataset.pt")] = False,
    init_adapter: Annotated[Path | None, typer.Option(
        help="start from this adapter's LoRA weights (bound to the same target and draft; its rank, alpha and "
        "modules replace --rank, --alpha, --target-modules): fine-tune an adapter on new data")] = None,
    device: Annotated[str, typer.Option(help="torch device for the target and the draft (cpu, cuda, cuda:1)")] = "cpu",
) -> None:
    """Distill a LoRA adapter so a cheap draft imitates the target (on-policy, KL + CE)."""
    import torch
    from pydantic import ValidationError

    from tgi_csd.cli_errors import fail
    from tgi_csd.distill import pipeline
    from tgi_csd.distill.train import DistillSettings

    values = {"rank": rank, "alpha": alpha, "steps": steps, "batch_size": batch_size, "lr": lr,
              "kl_weight": kl_weight, "ce_weight": ce_weight, "new_tokens": new_tokens,
              "samples_per_prompt": samples_per_prompt,
              "generate_batch_size": generate_batch_size, "val_fraction": val_fraction, "draft_vocab": draft_vocab,
              "seed": seed}
    if target_modules is not None:
        values["target_modules"] = [m.strip() for m in target_modules.split(",") if m.strip()]
    try:
        try:
            settings = DistillSettings(**values)
        except ValidationError as error:
            first = error.errors()[0]
            raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
        try:
            torch_device = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"--device: {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device: CUDA is not available here; use --device cpu")
        report = pipeline.run(target, draft, prompts, out, settings, resume, val_prompts, str(torch_device), chat,
                              init_adapter)
    except ConfigError as error:
        fail(error)
    typer.echo(json.dumps({k: report[k] for k in ("before", "after", "held_out", "wall_seconds", "peak_rss_mb")}))
    typer.echo(f"adapter written to {out}")
