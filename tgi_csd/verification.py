"""Verification of drafts by a reviewer's logits: which draft tokens stand, and the reviewer's own next token.

Logits are right-aligned as `ModelRunner.forward` returns them: row `i` with draft `d_i` uses
`logits[i, M - len(d_i) - 1:]`, position `j` scoring the token that follows draft token `j - 1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tgi_csd.sampling import SamplingParams, sample_inverse_cdf, warp


@dataclass(slots=True)
class Verdict:
    """Per row: how many draft tokens were accepted, and the emitted tokens
    (`accepted` draft tokens, then exactly one token chosen by the reviewer)."""

    accepted: list[int]
    tokens: list[list[int]]
    #: Sampling only: per row, the reviewer's distribution `[len(tokens), V]` of each emitted token
    #: (None for a greedy row).
    probs: list[torch.Tensor | None] | None = None


def _draft_grid(drafts: list[list[int]], width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned draft ids `[R, width]` (-1 where none) and each row's first used column."""
    grid = torch.full((len(drafts), width), -1, dtype=torch.long)
    starts = []
    for i, draft in enumerate(drafts):
        start = width - len(draft) - 1
        starts.append(start)
        if draft:
            grid[i, start : width - 1] = torch.tensor(draft)
    return grid.to(device), torch.tensor(starts, device=device)


def _leading_run(ok: torch.Tensor, starts: torch.Tensor) -> list[int]:
    """Length of the run of True from column `starts[i]` in each row (the last column never counts)."""
    columns = torch.arange(ok.shape[1], device=ok.device)
    ok = (ok | (columns[None, :] < starts[:, None])) & (columns[None, :] < ok.shape[1] - 1)
    return (ok.long().cumprod(1).sum(1) - starts).tolist()


def _emit(drafts: list[list[int]], accepted: list[int], chosen: list[list[int]], starts: list[int]) -> list[list[int]]:
    return [[*d[:a], row[s + a]] for d, a, row, s in zip(drafts, accepted, chosen, starts)]


def verify_greedy(logits: torch.Tensor, drafts: list[list[int]]) -> Verdict:
    """Accept the longest prefix equal to the reviewer's argmax; emit the argmax after it."""
    grid, starts = _draft_grid(drafts, logits.shape[1], logits.device)
    best = logits.argmax(-1)
    accepted = _leading_run(best == grid, starts)
    return Verdict(accepted, _emit(drafts, accepted, best.tolist(), starts.tolist()))


def verify_lenient(logits: torch.Tensor, drafts: list[list[int]], leniency: float) -> Verdict:
    """LOSSY for the reviewer: accept a draft token whose probability is at least
    `max_prob / leniency`. Used only by drafters reviewing lower drafters (the paper's
    leniency): the drafts they pass up differ from their own greedy output; the target's
    verification stays exact, so final outputs are unchanged, only acceptance moves."""
    grid, starts = _draft_grid(drafts, logits.shape[1], logits.device)
    logp = logits.log_softmax(-1)
    best_logp, best = logp.max(-1)
    draft_logp = logp.gather(-1, grid.clamp(min=0)[..., None]).squeeze(-1)
    ok = (grid >= 0) & (draft_logp >= best_logp - math.log(leniency))
    accepted = _leading_run(ok, starts)
    return Verdict(accepted, _emit(drafts, accepted, best.tolist(), starts.tolist()))


def verify_sampled(
    logits: torch.Tensor,
    drafts: list[list[int]],
    params: list[SamplingParams],
    uniforms: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    draft_probs: list[list[torch.Tensor | None]] | None = None,
) -> Verdict:
    """Exact speculative sampling, row by row.

    Deterministic draft token: sample the reviewer's token with the request's uniform for that
    generated index and accept the draft iff they are equal (sample-and-match), so the output
    equals plain sampling with the same seed. Sampled draft token with probability q: accept with
    probability min(1, p/q), else emit a sample of norm(max(0, p - q)) (rejection sampling).
    Greedy rows (temperature 0) take the argmax and need no uniforms. `uniforms[i]` is
    `(draw, accept)`, each with at least `len(drafts[i]) + 1` values in [0, 1): position `j`
    uses `draw[j]` and `accept[j]`.
    """
    width = logits.shape[1]
    accepted, tokens, probs_out = [], [], []
    for i, (draft, param, (draw, accept)) in enumerate(zip(drafts, params, uniforms)):
        rows = logits[i, width - len(draft) - 1 :]
        if param.greedy:
            probs, sampled = None, rows.argmax(-1).tolist()
        else:
            probs = warp(rows, param)
            sampled = sample_inverse_cdf(probs, draw[: len(draft) + 1].float().to(probs.device)).tolist()
        emitted: list[int] = []
        for j, token in enumerate(draft):
            q = draft_probs[i][j] if draft_probs is not None else None
            if q is None or probs is None:
                if sampled[j] != token:
                    emitted.append(sampled[j])
                    break
            else:
                p_token, q_token = probs[j, token].item(), q[token].item()
                if not accept[j].item() * q_token < p_token:  # reject (a NaN rejects too)
                    residual = (probs[j] - q).clamp_(min=0)
                    emitted.append(int(sample_inverse_cdf(residual, draw[j].float().to(probs.device)).item()))
                    break
            emitted.append(token)
        else:
            emitted.append(sampled[len(draft)])
        accepted.append(len(emitted) - 1)
        tokens.append(emitted)
        probs_out.append(None if probs is None else probs[: len(emitted)])
    return Verdict(accepted, tokens, probs_out)
