"""The sampling proof's machinery: the exact joint distribution of generated tokens 1-6 under the target
alone, the engine's empirical one, Pearson's test between them, and verifier mutants.

The target is a tiny Llama over 4 tokens, so the joint of six tokens has 4,096 cells and can be
enumerated exactly (16,384 sequences of 7 tokens in one forward). Requests generate 8 tokens: token 0
comes from the prefill, the first verify step drafts up to 6 tokens (`remaining - 1`), so tokens 1-6 are
decided by acceptance and residual sampling at draft positions 0-5.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass

import torch
from scipy.stats import chisquare

from helpers import StubTokenizer, tiny_llama
from tgi_csd import engine as engine_module
from tgi_csd import verification
from tgi_csd.builder import ModelLevel
from tgi_csd.drafters import model as model_drafter_module
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.engine import Engine, Request
from tgi_csd.models import cut_from_target
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams, sample_inverse_cdf, warp

VOCAB = 4
PROMPT = [1, 2, 3]
NEW_TOKENS = 8
JOINT = 6  # tokens 1..6
CHUNK = 2000  # requests per engine run


def proof_target():
    """Spread enough that the joint has hundreds of cells expecting 5+ at N = 10,000 (peaked is weaker)."""
    return tiny_llama(vocab=VOCAB, layers=4, seed=3, init=0.3)


@dataclass(frozen=True)
class Setup:
    """A cascade and sampling parameters: `levels` 'sampled' (two model drafters that sample, the larger
    verifying the smaller's samples by rejection sampling) or 'deterministic' (a greedy drafter + MaG)."""

    name: str
    levels: str
    k_matrix: tuple[tuple[int, ...], ...]
    params: SamplingParams

    @property
    def draft_length(self) -> int:
        return sum(self.k_matrix[0])

    def engine(self, target) -> Engine:
        if self.levels == "sampled":
            drafters = [ModelLevel("big", ModelRunner(cut_from_target(target, 3), "big"), sample=True),
                        ModelLevel("small", ModelRunner(cut_from_target(target, 1), "small"), sample=True)]
        else:
            drafters = [ModelLevel("big", ModelRunner(cut_from_target(target, 3), "big")), MaGDrafter(None)]
        k_matrix = [list(row) for row in self.k_matrix]
        return Engine.assemble(ModelRunner(target, "target"), drafters, k_matrix, StubTokenizer())


SETUPS = [
    Setup("sampled T=0.7, drafts of 6", "sampled", ((4, 2), (0, 3)), SamplingParams(temperature=0.7)),
    Setup("sampled T=1.3, drafts of 3", "sampled", ((2, 1), (0, 2)), SamplingParams(temperature=1.3)),
    Setup("sampled top-k 3, drafts of 5", "sampled", ((3, 2), (0, 2)), SamplingParams(temperature=1.0, top_k=3)),
    Setup("sampled top-p 0.9, drafts of 2", "sampled", ((1, 1), (0, 1)), SamplingParams(temperature=1.0, top_p=0.9)),
    Setup("deterministic T=0.7, drafts of 6", "deterministic", ((4, 2), (0, 0)), SamplingParams(temperature=0.7)),
]


@torch.inference_mode()
def exact_joint(target, params: SamplingParams) -> torch.Tensor:
    """P(t1..t6) under the target alone with `params`, float64, flattened to 4,096 cells."""
    sequences = torch.tensor(list(itertools.product(range(VOCAB), repeat=JOINT + 1)))  # t0..t6
    inputs = torch.cat([torch.tensor(PROMPT).expand(len(sequences), -1), sequences], 1)
    logits = target(inputs).logits[:, len(PROMPT) - 1 : -1]  # the positions predicting t0..t6
    probs = warp(logits, params).double()
    chosen = probs.gather(-1, sequences[..., None]).squeeze(-1).prod(-1)
    return chosen.view(VOCAB, -1).sum(0)  # marginal over t0


@dataclass
class Sampled:
    """Counts of (t1..t6), and what the target's verification did at each draft position."""

    counts: torch.Tensor
    proposed: list[int]
    accepted: list[int]


def sample_counts(target, setup: Setup, samples: int, first_seed: int = 0) -> Sampled:
    """(t1..t6) over `samples` seeded requests served by `setup`'s engine."""
    counts = torch.zeros(VOCAB**JOINT, dtype=torch.float64)
    proposed, accepted = [0] * JOINT, [0] * JOINT
    weights = VOCAB ** torch.arange(JOINT - 1, -1, -1)
    for start in range(first_seed, first_seed + samples, CHUNK):
        seeds = range(start, min(start + CHUNK, first_seed + samples))
        params = setup.params
        requests = [Request(prompt_ids=PROMPT, max_new_tokens=NEW_TOKENS, id=s,
                            params=params.model_copy(update={"seed": s})) for s in seeds]
        engine = setup.engine(target)
        for result in engine.generate(requests):
            counts[int((torch.tensor(result.token_ids[1 : JOINT + 1]) * weights).sum())] += 1
        for (reviewer, position), pair in engine.stats.positions.items():
            if reviewer == "target" and position < JOINT:
                proposed[position] += pair.proposed
                accepted[position] += pair.accepted
    return Sampled(counts, proposed, accepted)


def chi_square(observed: torch.Tensor, probabilities: torch.Tensor) -> tuple[float, int]:
    """Pearson's test of counts against exact probabilities, in float64: cells expecting fewer than 5 are
    merged into one; expected counts are normalised to the observed total; a count in a cell of
    probability 0 is a certain failure (p = 0). Returns (p-value, degrees of freedom)."""
    observed = observed.double()
    impossible = probabilities == 0
    if observed[impossible].sum() > 0:
        return 0.0, 0
    observed, probabilities = observed[~impossible], probabilities[~impossible]
    expected = probabilities.double() / probabilities.double().sum() * observed.sum()
    sparse = expected < 5
    obs, exp = observed[~sparse], expected[~sparse]
    if sparse.any():
        obs = torch.cat([obs, observed[sparse].sum(0, keepdim=True)])
        exp = torch.cat([exp, expected[sparse].sum(0, keepdim=True)])
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue), len(obs) - 1


# -- mutants of the verifier -----------------------------------------------------------------------------
def _unnormalised(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling that assumes `probs` sums to 1 (the bug an unnormalised residual exposes)."""
    return torch.searchsorted(probs.cumsum(-1), uniform[..., None]).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


#: name -> (original source text in verify_sampled, mutated text); each must be found exactly once.
MUTANTS = {
    "residual = p": ("residual = (probs[residual_rows, columns] - q[residual_rows, columns]).clamp_(min=0)",
                     "residual = probs[residual_rows, columns].clone()"),
    "q from the previous position": ("q[i, start_list[i] + j] = q_j",
                                     "q[i, start_list[i] + j] = draft_probs[i][max(j - 1, 0)]"),
    "swapped uniforms": ("accept * q_token < p_token", "draw * q_token < p_token"),
    "unnormalised residual": ("last[residual_rows] = sample_inverse_cdf(residual,",
                              "last[residual_rows] = _unnormalised(residual,"),
    "acceptance ignores q": ("accept * q_token < p_token", "accept < p_token"),
}
#: mutants that cannot change any output: they differ only where a continuous uniform ties exactly
EQUIVALENT = {"< vs <=": ("accept * q_token < p_token", "accept * q_token <= p_token")}


def mutant(original: str, replacement: str):
    """`verify_sampled` with one source edit, compiled in the verification module's namespace."""
    source = inspect.getsource(verification.verify_sampled)
    assert source.count(original) == 1, f"the mutation site {original!r} moved: update the mutant"
    namespace = {**vars(verification), "_unnormalised": _unnormalised, "sample_inverse_cdf": sample_inverse_cdf}
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), namespace)
    return namespace["verify_sampled"]


def patch_verifier(monkeypatch, function, where: str) -> None:
    """Install `function` as the target's verifier ('target'), the drafters' ('drafter'), or both."""
    if where in ("target", "both"):
        monkeypatch.setattr(engine_module, "verify_sampled", function)
    if where in ("drafter", "both"):
        monkeypatch.setattr(model_drafter_module, "verify_sampled", function)
