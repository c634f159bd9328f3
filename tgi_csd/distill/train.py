"""On-policy distillation of a LoRA-adapted draft into the target: KL on the target's top-k logits
plus cross-entropy on its tokens, with a held-out acceptance check, checkpoints and resume."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel

from tgi_csd.adapters import ReducedHead
from tgi_csd.distill.data import Example
from tgi_csd.errors import reading

CHECKPOINT = "checkpoint"


class DistillSettings(BaseModel):
    """The recipe. Defaults finish in minutes on a 2-core CPU for SmolLM2-135M."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(16, ge=1, le=256)
    alpha: float = Field(32.0, gt=0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )
    steps: int = Field(150, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    kl_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(0.5, ge=0)
    top_k: int = Field(32, ge=1, description="target logits kept per position for the KL term")
    new_tokens: int = Field(64, ge=1, description="continuation length the target generates per prompt")
    context: int = Field(192, ge=1, description="prompt tokens kept before each continuation")
    samples_per_prompt: int = Field(0, ge=0, description="extra sampled continuations per prompt (temperature 1)")
    generate_batch_size: int = Field(16, ge=1, description="continuations the target generates at once")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    draft_vocab: int | None = Field(None, ge=2, description="keep only the V' most frequent target tokens in the head")
    eval_every: int = Field(25, ge=1)
    checkpoint_every: int = Field(25, ge=1)
    seed: int = 0


@dataclass
class Acceptance:
    """Teacher-forced: next-token agreement, and mean accepted length of k-token drafts.

    While a draft agrees with the target its context equals the target's, so the accepted length
    of a k-token draft starting at position i is the run of agreements from i, capped at k.
    """

    agreement: float
    accepted_k4: float
    accepted_k8: float

    def as_dict(self) -> dict[str, float]:
        return {"agreement": round(self.agreement, 4), "accepted_k4": round(self.accepted_k4, 3),
                "accepted_k8": round(self.accepted_k8, 3)}


def make_draft(base: PreTrainedModel, settings: DistillSettings, init: Path | None = None) -> PreTrainedModel:
    """LoRA on `target_modules` of a private copy of `base` (only LoRA trains): new, or `init`'s weights
    (a peft adapter folder whose rank, alpha and modules `settings` already holds)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from tgi_csd.errors import ConfigError

    draft = copy.deepcopy(base)
    for parameter in draft.parameters():
        parameter.requires_grad_(False)
    if init is not None:
        return PeftModel.from_pretrained(draft, str(init), is_trainable=True)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=settings.target_modules,
                        lora_dropout=0.0, bias="none")
    try:
        return get_peft_model(draft, config)
    except ValueError as error:
        raise ConfigError(f"--target-modules: {error}") from None


def _hidden(draft, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    base = draft.get_base_model()
    return base.model(input_ids=tokens, attention_mask=mask).last_hidden_state


def draft_head(draft, vocab_ids: torch.Tensor | None) -> torch.nn.Module:
    """The (frozen) LM head the draft will serve with: full, or reduced to `vocab_ids`."""
    head = draft.get_base_model().get_output_embeddings()
    return head if vocab_ids is None else ReducedHead(head, vocab_ids)


Spans = list[tuple[int, int, int]]


def _batch(examples: list[Example], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Spans]:
    width = max(len(e.tokens) for e in examples)
    tokens = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    spans = []
    for i, e in enumerate(examples):
        tokens[i, : len(e.tokens)] = torch.tensor(e.tokens)
        mask[i, : len(e.tokens)] = 1
        spans.append((i, e.start - 1, len(e.tokens) - 1))  # positions predicting the continuation
    return tokens.to(device), mask.to(device), spans


def loss_on(draft, head: torch.nn.Module, examples: list[Example], settings: DistillSettings,
            vocab_ids: torch.Tensor | None) -> torch.Tensor:
    device = _device(draft)
    tokens, mask, spans = _batch(examples, device)
    hidden = _hidden(draft, tokens, mask)
    picked = torch.cat([hidden[i, a:b] for i, a, b in spans])
    logp = head(picked).log_softmax(-1)
    topk_ids = torch.cat([e.topk_ids for e in examples]).to(device)
    target_logits = torch.cat([e.topk_logits for e in examples]).to(device).float()
    if vocab_ids is not None:  # the draft cannot put mass outside its vocabulary: learn the rest
        inside = torch.isin(topk_ids, vocab_ids.to(device))
        rows = inside[:, 0]  # positions whose target token the draft can propose at all
        logp, topk_ids, inside = logp[rows], topk_ids[rows], inside[rows]
        target_logits = target_logits[rows].masked_fill(~inside, float("-inf"))
    target_p = target_logits.softmax(-1)
    draft_logp = logp.gather(-1, topk_ids).clamp(min=-1e4)
    kl = (target_p * (target_p.clamp(min=1e-12).log() - draft_logp)).sum(-1).mean()
    ce = -draft_logp[:, 0].mean()  # top-1 of the target: its greedy token
    return settings.kl_weight * kl + settings.ce_weight * ce


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def acceptance(model_forward, examples: list[Example], batch_size: int = 8,
               device: torch.device | str = "cpu") -> Acceptance:
    """`model_forward(tokens, mask)` (inputs on `device`) returns logits `[B, T, V]`; compared with the
    target's top-1."""
    runs4, runs8, agree, total = [], [], 0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        tokens, mask, spans = _batch(chunk, torch.device(device))
        logits = model_forward(tokens, mask)
        for (i, a, b), e in zip(spans, chunk):
            match = (logits[i, a:b].argmax(-1).cpu() == e.topk_ids[:, 0]).tolist()
            agree += sum(match)
            total += len(match)
            run = 0
            lengths = []
            for ok in reversed(match):  # run of agreements starting at each position
                run = run + 1 if ok else 0
                lengths.append(run)
            runs4 += [min(r, 4) for r in lengths]
            runs8 += [min(r, 8) for r in lengths]
    return Acceptance(agree / max(total, 1), sum(runs4) / max(len(runs4), 1), sum(runs8) / max(len(runs8), 1))


def draft_forward(draft, head: torch.nn.Module):
    def forward(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return head(_hidden(draft, tokens, mask))

    return forward


def frequent_tokens(examples: list[Example], size: int, always: list[int]) -> torch.Tensor:
    """The `size` tokens the target emits most often (FR-Spec), plus `always` (e.g. EOS)."""
    counts = torch.bincount(torch.cat([e.topk_ids[:, 0] for e in examples]))
    ranked = counts.argsort(descending=True)[: max(size - len(always), 0)].tolist()
    return torch.tensor(sorted(set(ranked) | set(always)))


def train(draft, train_set: list[Example], val_set: list[Example], settings: DistillSettings, out: Path,
          vocab_ids: torch.Tensor | None, progress, resume: bool) -> list[dict]:
    """Train the LoRA weights in place; checkpoints under `out/checkpoint`. Returns the eval history."""
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    head = draft_head(draft, vocab_ids)
    trainable = [p for p in draft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / settings.steps))
    rng = random.Random(settings.seed)
    step, history, order = 0, [], []
    checkpoint = out / CHECKPOINT
    if resume and (checkpoint / "state.pt").is_file():
        with reading("--resume", checkpoint / "state.pt", f"delete {checkpoint} to train from the start"):
            state = torch.load(checkpoint / "state.pt", weights_only=True)
            set_peft_model_state_dict(draft, state["lora"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            rng.setstate(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            step, history, order = state["step"], state["history"], state["order"]
    task = progress.add_task("distilling", total=settings.steps, completed=step, loss=float("nan"),
                             agreement=history[-1]["agreement"] if history else float("nan"))
    draft.train()
    while step < settings.steps:
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(train_set)), len(train_set))
        batch = [train_set[order.pop()] for _ in range(min(settings.batch_size, len(train_set)))]
        loss = loss_on(draft, head, batch, settings, vocab_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        progress.update(task, advance=1, loss=loss.item())
        if step % settings.eval_every == 0 or step == settings.steps:
            draft.eval()
            result = acceptance(draft_forward(draft, head), val_set, device=_device(draft))
            draft.train()
            history.append({"step": step, "loss": round(loss.item(), 4), **result.as_dict()})
            progress.update(task, agreement=result.agreement)
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            checkpoint.mkdir(parents=True, exist_ok=True)
            torch.save({"lora": get_peft_model_state_dict(draft), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                        "step": step, "history": history, "order": order}, checkpoint / "state.pt")
            (checkpoint / "history.json").write_text(json.dumps(history, indent=2))
    draft.eval()
    return history
