"""Greedy differential fuzzing of the engine against HF `generate`, one seeded random case at a time.

A case draws a cascade (model drafters: an exact copy of the target, noisy copies, layer cuts, LoRA'd
cuts, each maybe sampling, lenient or confidence-gated; MaG with or without lead and bigram; TGI's
n-gram; maybe a drafter KV budget, maybe the CPU kernel, maybe adaptive), a valid k-matrix with entries
0-6, and 1-16 requests (prompts of 1-300 tokens, 1-64 new tokens, joining at random steps, maybe EOS,
maybe stop strings). Every output must equal the target alone's greedy continuation, cut by the same
EOS / length / stop rules. In sampled mode the drafters are deterministic (no sampling drafters) and the
requests mostly sampled with random temperature / top-k / top-p / seed: every output must equal plain
sampling's (sample-and-match verification reproduces it token for token).

The target is a tiny Llama initialised to be non-degenerate (about 18 distinct tokens in 24, median top-2
logit gap about 1). Prompts whose reference has a top-2 gap below `TIE_MARGIN` (1e-3) anywhere are left
out of the pool, so the near-tie rule (a difference is accepted only at a reference gap below 1e-4) can
accept nothing here: every case demands token-for-token identity.

Used by `tests/test_fuzz.py` (the CI-sized run) and `scripts/fuzz.py` (5,000+ cases).
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import StubTokenizer
from tgi_csd.builder import Level, ModelLevel
from tgi_csd.config import AdaptiveSettings
from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.bigram import BigramTable
from tgi_csd.drafters.cascade import HorizontalCascade
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.ngram import TGINGramDrafter
from tgi_csd.drafters.suffix_store import SuffixStore
from tgi_csd.engine import Engine, Request
from tgi_csd.models import cut_from_target
from tgi_csd.reference import reference_generate
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams

VOCAB = 64
LAYERS = 4
MAX_PROMPT = 300
MAX_NEW = 64
MAX_K = 6
TIE_MARGIN = 1e-3  # pool prompts have no reference top-2 gap below this (so no difference passes as a near-tie)


def fuzz_target(seed: int = 11) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.5, max_position_embeddings=512,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


@dataclass
class PoolEntry:
    prompt: list[int]
    tokens: list[int]  # the reference's MAX_NEW greedy tokens (no EOS)


def reference_pool(target: LlamaForCausalLM, size: int, seed: int = 0) -> list[PoolEntry]:
    """`size` prompts (random, and periodic ones that suffix matching can exploit) with their references."""
    rng = random.Random(seed)
    pool: list[PoolEntry] = []
    while len(pool) < size:
        length = min(MAX_PROMPT, max(1, round(2 ** rng.uniform(0, np.log2(MAX_PROMPT)))))
        if rng.random() < 0.3 and length >= 4:
            period = [rng.randrange(VOCAB) for _ in range(rng.randint(2, 8))]
            prompt = (period * (length // len(period) + 1))[:length]
        else:
            prompt = [rng.randrange(VOCAB) for _ in range(length)]
        reference = reference_generate(target, prompt, MAX_NEW, None)
        if min(reference.gaps) >= TIE_MARGIN:
            pool.append(PoolEntry(prompt, reference.token_ids))
    return pool


# -- drafters ------------------------------------------------------------------------------------------
def _noisy_copy(target: LlamaForCausalLM, scale: float, generator: torch.Generator) -> LlamaForCausalLM:
    model = copy.deepcopy(target)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale * parameter.std())
    return model


def _lora(model: LlamaForCausalLM, merge: bool, seed: int) -> LlamaForCausalLM:
    """A random LoRA (a stand-in for a distilled adapter), merged into a copy or left unmerged."""
    from peft import LoraConfig, get_peft_model

    from tgi_csd.models import share_weights

    torch.manual_seed(seed)
    base = copy.deepcopy(model) if merge else share_weights(model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    return (peft_model.merge_and_unload() if merge else peft_model.get_base_model()).eval()


def _model_drafter(target, name: str, rng: random.Random, kernel: str, described: list[str],
                   features: list[str], deterministic: bool) -> ModelLevel:
    kind = rng.choice(["copy", "noisy", "noisy", "cut", "cut", "lora"])
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    if kind == "copy":
        model = target
    elif kind == "noisy":
        model = _noisy_copy(target, rng.choice([0.02, 0.1, 0.3]), generator)
    elif kind == "cut":
        model = cut_from_target(target, rng.randint(1, LAYERS - 1))
    else:
        model = _lora(cut_from_target(target, rng.randint(1, LAYERS - 1)), rng.random() < 0.5, rng.randrange(2**31))
    option = rng.choice(["plain", "plain", "lenient", "confident"] + ([] if deterministic else ["sample"]))
    leniency = rng.choice([1.5, 4.0]) if option == "lenient" else None
    min_confidence = rng.choice([0.2, 0.5, 0.8]) if option == "confident" else None
    described.append(f"{name}={kind}/{option}")
    features.extend([f"drafter:{kind}", f"option:{option}"])
    return ModelLevel(name, ModelRunner(model, name, kernel), leniency=leniency, sample=option == "sample",
                        min_confidence=min_confidence)


def _statistical(rng: random.Random, described: list[str], features: list[str]) -> list[Drafter]:
    drafters: list[Drafter] = []
    if rng.random() < 0.8:
        max_ngram = rng.randint(1, 12)
        min_ngram = rng.randint(1, max_ngram)
        lead = rng.choice([None, rng.randint(1, max_ngram)])
        bigram = None
        if rng.random() < 0.5:
            bigram = BigramTable(np.array([rng.randrange(VOCAB) for _ in range(VOCAB)]), "fuzz")
        store = None
        if rng.random() < 0.4:  # a small store, so that eviction happens within a case
            store = SuffixStore(memory_mb=rng.choice([0.05, 1.0]), max_ngram=rng.randint(2, 8),
                                min_confidence=rng.choice([0.3, 0.6]), eviction=rng.choice(["fifo", "lru"]))
        drafters.append(MaGDrafter(bigram, "mag", max_ngram, min_ngram, lead, store))
        described.append(f"mag(n={min_ngram}..{max_ngram}, lead={lead}, bigram={bigram is not None}, "
                         f"store={store.memory_mb if store else None})")
        features.extend(["mag"] + (["mag:lead"] if lead else []) + (["mag:bigram"] if bigram else [])
                        + (["mag:store"] if store else []))
    if rng.random() < 0.3:
        drafters.append(TGINGramDrafter("ngram"))
        described.append("ngram")
        features.append("ngram")
    return drafters


def _k_matrix(rng: random.Random, models: int, total: int) -> list[list[int]]:
    """Row 0 for the target, row r for model drafter r; a reviewer only uses drafters after itself."""
    rows = []
    for r in range(models + 1):
        row = [0 if c < r else rng.choice([0, 0, 1, 2, 3, 4, 5, 6]) for c in range(total)]
        rows.append(row)
    return rows


# -- one case ------------------------------------------------------------------------------------------
@dataclass
class Coverage:
    """What the run exercised: full drafts accepted by length, drafts by length, cases by feature."""

    full_accepts: Counter = field(default_factory=Counter)
    drafts: Counter = field(default_factory=Counter)
    features: Counter = field(default_factory=Counter)
    requests: int = 0
    finish: Counter = field(default_factory=Counter)

    def merge(self, other: Coverage) -> None:
        for name in ("full_accepts", "drafts", "features", "finish"):
            getattr(self, name).update(getattr(other, name))
        self.requests += other.requests


@dataclass
class Case:
    seed: int
    description: str
    engine: Engine
    features: list[str]
    requests: list[tuple[int, Request]]  # (join step, request)
    expected: dict[int, tuple[list[int], str]]


def _expected(entry: PoolEntry, request: Request, eos: int | None, tokenizer: StubTokenizer) -> tuple[list[int], str]:
    out: list[int] = []
    for token in entry.tokens:
        out.append(token)
        if eos is not None and token == eos and not request.ignore_eos:
            return out, "eos"
        if len(out) >= request.max_new_tokens:
            return out, "length"
        if request.stop and any(s in tokenizer.decode(out) for s in request.stop):
            return out, "stop"
    raise AssertionError("the pool's references are MAX_NEW tokens long")


def _sampling(rng: random.Random) -> SamplingParams:
    if rng.random() < 0.2:
        return SamplingParams()
    return SamplingParams(temperature=rng.choice([0.5, 0.8, 1.0, 1.3]), top_k=rng.choice([0, 0, 5, 20]),
                          top_p=rng.choice([1.0, 1.0, 0.9, 0.7]), seed=rng.randrange(2**31))


def make_case(target: LlamaForCausalLM, pool: list[PoolEntry], seed: int, sampled: bool = False) -> Case:
    """A greedy case (outputs against the pool's HF references) or, with `sampled`, a case of seeded sampled
    (and some greedy) requests under deterministic drafters only, whose outputs must equal plain sampling's:
    the same requests served by the target alone."""
    rng = random.Random(seed)
    described: list[str] = []
    kernel = rng.choice(["off", "off", "auto"])
    features = [f"kernel:{kernel}"]
    models = [_model_drafter(target, f"m{i}", rng, kernel, described, features, deterministic=sampled)
              for i in range(rng.choice([0, 1, 1, 2, 2, 3]))]
    levels: list[Level] = [*models, *_statistical(rng, described, features)]
    features.append(f"levels:{len(models)}")
    k_matrix = _k_matrix(rng, len(models), len(levels))
    budget = None
    if models and rng.random() < 0.3:
        budget = rng.choice([0.005, 0.02, 0.1])
        described.append(f"kv_budget={budget}MiB")
        features.append("kv-budget")
    adaptive = None
    if rng.random() < 0.3:
        adaptive = AdaptiveSettings(window_steps=rng.choice([2, 16, 64]), hold_steps=rng.choice([1, 8]),
                                    probe_every=rng.choice([2, 32]), warmup_steps=rng.choice([0, 1, 4]),
                                    calibrate=rng.random() < 0.5)
        described.append("adaptive, calibrated" if adaptive.calibrate else "adaptive")
        features.append("adaptive")
    eos = rng.choice([None, None, rng.randrange(VOCAB)])
    features.append("eos" if eos is not None else "no-eos")
    tokenizer = StubTokenizer(eos)
    engine = Engine.assemble(ModelRunner(target, "target", kernel), levels, k_matrix, tokenizer, adaptive=adaptive,
                             drafter_kv_budget_mb=budget)
    requests, expected = [], {}
    for i in range(rng.randint(1, 16)):
        entry = rng.choice(pool)
        stop: list[str] = []
        if rng.random() < 0.2:
            text = tokenizer.decode(entry.tokens)
            start = rng.randrange(len(text) - 3)
            stop = [text[start : start + rng.randint(2, 3)]]
            features.append("stop")
        request = Request(prompt_ids=entry.prompt, max_new_tokens=rng.randint(1, MAX_NEW), stop=stop,
                          ignore_eos=rng.random() < 0.2, id=i, params=_sampling(rng) if sampled else SamplingParams())
        join = 0 if i == 0 else rng.choice([0, 0, rng.randint(1, 40)])
        requests.append((join, request))
        if not sampled:
            expected[i] = _expected(entry, request, eos, tokenizer)
    if sampled:
        features.append("sampled")
        plain = Engine.assemble(ModelRunner(target, "target"), [], [[]], tokenizer)
        for result in plain.generate([request.model_copy() for _, request in requests]):
            expected[result.id] = (result.token_ids, result.finish_reason)
    description = f"seed {seed}: k={k_matrix} kernel={kernel} eos={eos} drafters [{', '.join(described)}]"
    return Case(seed, description, engine, features, requests, expected)


def _checked(drafter: Drafter, log: list[str]) -> None:
    """Record any proposal longer than asked (the drafting invariant)."""
    propose = drafter.propose

    def wrapped(rows, seqs, counts):
        proposal = propose(rows, seqs, counts)
        for row, tokens, count in zip(rows, proposal.tokens, counts):
            if len(tokens) > count:
                log.append(f"{drafter.name} proposed {len(tokens)} tokens for row {row}, asked for {count}")
        return proposal

    drafter.propose = wrapped


def _counted(top: HorizontalCascade, coverage: Coverage) -> None:
    record = top.record

    def wrapped(draft, accepted):
        for origins, count in zip(draft.origins, accepted):
            if origins:
                coverage.drafts[len(origins)] += 1
                if count == len(origins):
                    coverage.full_accepts[len(origins)] += 1
        record(draft, accepted)

    top.record = wrapped


def run_case(case: Case) -> tuple[list[str], Coverage]:
    """Run the case; return its failures (empty when every output is right) and what it exercised."""
    coverage = Coverage()
    failures: list[str] = []
    for drafter in case.engine.drafters:
        _checked(drafter, failures)
    _counted(case.engine.top, coverage)
    pending = sorted(case.requests, key=lambda item: item[0])
    results = {}
    step = 0
    while pending or case.engine.has_work():
        while pending and pending[0][0] <= step:
            case.engine.add_request(pending.pop(0)[1])
        for result in case.engine.step():
            results[result.id] = result
        step += 1
        if step > 10_000:
            failures.append("no progress after 10,000 steps")
            break
    for request_id, (tokens, reason) in case.expected.items():
        result = results.get(request_id)
        if result is None:
            failures.append(f"request {request_id} never finished")
            continue
        coverage.finish[result.finish_reason] += 1
        if result.token_ids != tokens or result.finish_reason != reason:
            first = next((i for i, (a, b) in enumerate(zip(result.token_ids, tokens)) if a != b),
                         min(len(tokens), len(result.token_ids)))
            failures.append(f"request {request_id}: got {result.token_ids} ({result.finish_reason}), expected "
                            f"{tokens} ({reason}); first difference at {first}")
    coverage.requests += len(case.expected)
    coverage.features.update(set(case.features))
    return failures, coverage
