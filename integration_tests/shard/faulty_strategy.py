"""A test-only speculation strategy that breaks on chosen steps: what the patched seam must absorb.

It drafts with TGI's n-gram rule and, by proposal step, raises a torch error, proposes an id outside the
vocabulary, more than `speculate` ids, or the wrong number of rows; its first `filter` raises too. `serve.py`
registers it (as `faulty`) when `TGI_CSD_TEST_STRATEGY=faulty` is set; no installed package carries it.
"""

from __future__ import annotations

import torch

from tgi_csd.plugin.hookspecs import hookimpl
from tgi_csd.plugin.strategies.ngram import ngram_proposal

# proposal step -> the fault injected there
SCHEDULE = {2: "torch-error", 3: "out-of-vocabulary", 4: "too-many-ids", 5: "wrong-rows", 9: "torch-error",
            12: "out-of-vocabulary"}


class FaultyStrategy:
    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.steps = 0
        self.filters = 0
        self.injected: list[str] = []

    @hookimpl
    def tgi_speculation_propose(self, histories, accepted, speculate):
        self.steps += 1
        rows = [ngram_proposal(h, a, speculate) for h, a in zip(histories, accepted)]
        fault = SCHEDULE.get(self.steps)
        if fault:
            self.injected.append(fault)
        if fault == "torch-error":
            torch.empty(2, 3) @ torch.empty(4, 5)  # a RuntimeError from torch, as a kernel would raise
        if fault == "out-of-vocabulary":
            rows[0] = [self.vocab_size + 7]
        if fault == "too-many-ids":
            rows[-1] = [1] * (speculate + 1)
        if fault == "wrong-rows":
            rows = rows[1:] if len(rows) > 1 else rows * 2
        return rows

    @hookimpl
    def tgi_speculation_filter(self):
        self.filters += 1
        if self.filters == 1:
            self.injected.append("filter")
            raise KeyError("injected fault in filter")

    @hookimpl
    def tgi_speculation_stats(self):
        return {"injected": list(self.injected)}


@hookimpl
def tgi_speculation_create(vocab_size):
    return FaultyStrategy(vocab_size)
