"""The paper's cost model and its standardized walltime improvement (SWI).

Cost model (CS Drafting, arXiv 2312.11462): one call of a model costs in proportion to its size,
`c = compute parameters of the model / compute parameters of the target` (so a target call costs 1,
a statistical drafter 0). Compute parameters are all parameters a forward multiplies with: every
unique parameter except the input embedding (a lookup), which counts once, as the head, when tied.
For a draft cut from the target that is its layers, final norm and the head.

SWI = (generated tokens × cost of one target call) / (sum over all model calls of their cost): the
speedup over autoregressive decoding the cost model predicts. At batch size B the same ratio is
divided by plain decoding's at B (which is 1 at batch 1), so SWI stays "speedup vs `ar`".
"""

from __future__ import annotations

from transformers import PreTrainedModel


def compute_params(model: PreTrainedModel) -> int:
    """Parameters a forward computes with (see the module docstring)."""
    total = sum(p.numel() for p in model.parameters())  # shared tensors count once
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        total -= embedding.numel()
    return total


def relative_costs(target: PreTrainedModel, drafters: dict[str, PreTrainedModel]) -> dict[str, float]:
    """Cost of one call of each neural drafter, relative to one target call."""
    reference = compute_params(target)
    return {name: compute_params(model) / reference for name, model in drafters.items()}


def tokens_per_cost(tokens: int, target_forwards: int, drafter_forwards: dict[str, int],
                    costs: dict[str, float]) -> float:
    """Generated tokens per unit of cost-model time (a target call = 1); SWI is this over `ar`'s."""
    cost = target_forwards + sum(costs[name] * calls for name, calls in drafter_forwards.items())
    return tokens / cost if cost else 0.0
