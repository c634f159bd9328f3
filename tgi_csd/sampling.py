"""Sampling parameters and the target distribution they define."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """How the target picks tokens. `temperature == 0` (the default) is greedy decoding."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; > 0 = sample")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass; 1 = off")
    seed: int = Field(0, description="per-request seed: same seed, same output")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities `[..., V]` after temperature, top-k and top-p (float32)."""
    scores = logits.float() / params.temperature
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = sorted_scores.softmax(-1)
        # Drop a token when the mass strictly before it already reaches top_p (the top token always stays).
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores.softmax(-1)


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs [..., V]` from `uniforms [...]` in [0, 1): the inverse CDF.

    Deterministic given the uniforms, so a request's output depends only on its seed.
    """
    cdf = probs.cumsum(-1)
    u = (uniforms * cdf[..., -1]).unsqueeze(-1).contiguous()
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class UniformStream:
    """A request's uniforms, two per generated position (draw, accept), from its seed, made on demand.

    Invariant: the token at generated index `t` is always drawn with `draw[t]`, whichever drafts were
    tried, so plain decoding and speculative decoding emit the same tokens. Values come in blocks of
    `BLOCK` draws then `BLOCK` accepts from one generator, so a request holds only what its generated
    tokens used (16 bytes a position), never its whole `max_new_tokens` up front.
    """

    BLOCK = 64

    def __init__(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)
        self.draw = torch.empty(0, dtype=torch.float64)
        self.accept = torch.empty(0, dtype=torch.float64)

    def window(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.draw) < start + count:
            draw = torch.rand(self.BLOCK, generator=self._generator, dtype=torch.float64)
            accept = torch.rand(self.BLOCK, generator=self._generator, dtype=torch.float64)
            self.draw, self.accept = torch.cat([self.draw, draw]), torch.cat([self.accept, accept])
        return self.draw[start : start + count], self.accept[start : start + count]
