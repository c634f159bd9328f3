"""The exactness oracle: the target alone under transformers `generate`, and comparison against it.

A k-token verification forward and a 1-token decode step round differently, so a greedy output
may legitimately flip where the reference's top two logits nearly tie. The only accepted
difference is one whose first differing position is such a near-tie (gap < `tolerance`). Seeded sampling
has the same hazard where the position's draw lies within `tolerance` of an edge of the drawn token's slice of
the cumulative distribution (`compare_sampled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from transformers import PreTrainedModel

from tgi_csd.sampling import SamplingParams, UniformStream, warp


@dataclass
class ReferenceOutput:
    token_ids: list[int]
    #: top-1 minus top-2 logit at each generated position
    gaps: list[float]


class Agreement(str, Enum):
    IDENTICAL = "identical"
    NEAR_TIE = "near-tie"
    MISMATCH = "MISMATCH"


@torch.inference_mode()
def reference_generate(model: PreTrainedModel, prompt_ids: list[int], max_new_tokens: int,
                       eos_token_id: int | None) -> ReferenceOutput:
    """Greedy `generate` with the target alone (KV cache on), with top-2 logit gaps."""
    out = model.generate(
        torch.tensor([prompt_ids], device=model.device), max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=eos_token_id, pad_token_id=eos_token_id, output_logits=True,
        return_dict_in_generate=True, temperature=None, top_p=None, top_k=None,
    )
    tokens = out.sequences[0, len(prompt_ids):].tolist()
    gaps = []
    for logits in out.logits:
        top = logits[0].float().topk(2).values
        gaps.append(float(top[0] - top[1]))
    return ReferenceOutput(tokens, gaps)


def _first_difference(a: list[int], b: list[int]) -> int:
    """The first position where `a` and `b` differ (the shorter one's length if one extends the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(candidate: list[int], reference: ReferenceOutput, tolerance: float) -> tuple[Agreement, int | None]:
    """How `candidate` agrees with the reference, and the first differing position if any."""
    if candidate == reference.token_ids:
        return Agreement.IDENTICAL, None
    first = _first_difference(candidate, reference.token_ids)
    if first < len(reference.gaps) and reference.gaps[first] < tolerance:
        return Agreement.NEAR_TIE, first
    return Agreement.MISMATCH, first


def draw_margin(probs: torch.Tensor, uniform: float, token: int) -> float:
    """How far the inverse-CDF draw `uniform` lies inside `token`'s slice of the cumulative `probs [V]`
    (float64; negative: outside it). A draw this close to an edge flips under a rounding of that size."""
    cdf = probs.double().cumsum(-1)
    x = uniform * float(cdf[-1])
    high = float(cdf[token])
    return min(x - (high - float(probs[token])), high - x)


@torch.inference_mode()
def compare_sampled(candidate: list[int], reference_ids: list[int], model: PreTrainedModel, prompt_ids: list[int],
                    params: SamplingParams, tolerance: float) -> tuple[Agreement, int | None]:
    """How seeded sample `candidate` agrees with `reference_ids`, the target alone's plain sampling with the same
    `params` (seed included). A difference counts as a near-tie when, at its first position, the request's draw
    lies within `tolerance` of an edge of the reference token's slice (the target's distribution there, recomputed
    in one float32 forward)."""
    if candidate == reference_ids:
        return Agreement.IDENTICAL, None
    first = _first_difference(candidate, reference_ids)
    if first == min(len(candidate), len(reference_ids)):
        return Agreement.MISMATCH, first  # one stopped where the other went on: not a rounding flip
    logits = model(torch.tensor([prompt_ids + reference_ids[:first]], device=model.device)).logits[0, -1]
    uniform = float(UniformStream(params.seed).window(first, 1)[0][0])
    if abs(draw_margin(warp(logits, params).cpu(), uniform, reference_ids[first])) < tolerance:
        return Agreement.NEAR_TIE, first
    return Agreement.MISMATCH, first
