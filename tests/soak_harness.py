"""Soak: requests arriving as a Poisson process into one long-running engine with tight KV budgets.

`soak(...)` drives a csd engine (two layer-cut drafters + MaG, the drafters' KV capped tight, the target's
KV capped too) and a no-drafter engine with the same arrivals; it samples RSS and KV bytes along the way
and records each request's wait (steps from arrival to admission). `tests/test_soak.py` runs a CI-sized
soak; `scripts/soak.py` the full one (2,000 requests over about 10,000 steps) with a plot.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import StubTokenizer
from tgi_csd.builder import ModelLevel
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.engine import Engine, Request
from tgi_csd.models import cut_from_target
from tgi_csd.runner import ModelRunner
from tgi_csd.sampling import SamplingParams

VOCAB = 96


def soak_target(seed: int = 5) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.4,
                         max_position_embeddings=512, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForCausalLM(config).eval()


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def arrivals(requests: int, steps: int, seed: int) -> list[tuple[int, Request]]:
    """`requests` requests at Poisson arrival steps over about `steps` steps: prompts of 4-128 tokens (some
    repetitive), 4-64 new tokens, a quarter of them sampled (seeded), the rest greedy."""
    rng = random.Random(seed)
    rate = requests / steps
    step, out = 0.0, []
    for i in range(requests):
        step += rng.expovariate(rate)
        length = rng.randint(4, 128)
        if rng.random() < 0.4:
            period = [rng.randrange(VOCAB) for _ in range(rng.randint(2, 6))]
            prompt = (period * length)[:length]
        else:
            prompt = [rng.randrange(VOCAB) for _ in range(length)]
        params = SamplingParams(temperature=0.8, seed=i) if rng.random() < 0.25 else SamplingParams()
        out.append((int(step), Request(prompt_ids=prompt, max_new_tokens=rng.randint(4, 64), params=params, id=i)))
    return out


def csd_engine(target, drafter_kv_mb: float | None, target_kv_mb: float | None) -> Engine:
    levels = [ModelLevel("half", ModelRunner(cut_from_target(target, 2), "half")),
              ModelLevel("quarter", ModelRunner(cut_from_target(target, 1), "quarter")),
              MaGDrafter(None)]
    budget = None if target_kv_mb is None else int(target_kv_mb * 2**20)
    return Engine.assemble(ModelRunner(target, "target"), levels, [[2, 1, 2], [0, 2, 1], [0, 0, 2]],
                           StubTokenizer(), kv_budget_bytes=budget, drafter_kv_budget_mb=drafter_kv_mb)


def plain_engine(target, target_kv_mb: float | None) -> Engine:
    budget = None if target_kv_mb is None else int(target_kv_mb * 2**20)
    return Engine.assemble(ModelRunner(target, "target"), [], [[]], StubTokenizer(), kv_budget_bytes=budget)


@dataclass
class Trace:
    """Per sampled step: RSS and KV bytes; per request: its output and wait."""

    steps: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    target_kv: list[int] = field(default_factory=list)
    drafter_kv: list[int] = field(default_factory=list)
    outputs: dict[int, list[int]] = field(default_factory=dict)
    waits: dict[int, int] = field(default_factory=dict)
    total_steps: int = 0


def drive(engine: Engine, schedule: list[tuple[int, Request]], sample_every: int = 10) -> Trace:
    """Run `schedule` through `engine` to the end, sampling memory every `sample_every` steps."""
    trace = Trace()
    pending = list(schedule)
    arrived: dict[int, int] = {}
    step = 0
    while pending or engine.has_work():
        while pending and pending[0][0] <= step:
            _, request = pending.pop(0)
            engine.add_request(request.model_copy())
            arrived[request.id] = step
        waiting = {s.request.id for s in engine.waiting}
        for result in engine.step():
            trace.outputs[result.id] = result.token_ids
        for request_id in waiting - {s.request.id for s in engine.waiting}:
            trace.waits[request_id] = step - arrived[request_id]
        if step % sample_every == 0:
            trace.steps.append(step)
            trace.rss.append(rss_bytes())
            trace.target_kv.append(engine.target.cache.nbytes)
            trace.drafter_kv.append(sum(d.runner.cache.nbytes for d in engine.drafters if isinstance(d, ModelDrafter)))
        step += 1
    trace.total_steps = step
    return trace


def growth(values: list[int]) -> float:
    """How much the last quarter's median exceeds the second quarter's (a plateau gives about 0)."""
    quarter = max(1, len(values) // 4)
    return float(np.median(values[-quarter:]) - np.median(values[quarter : 2 * quarter]))
