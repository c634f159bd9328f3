"""A router-like gRPC client for one shard: blocks allocated per request, Prefill, Decode, FilterBatch.

Mirrors what TGI's v3 router does with a shard: ClearCache + Info + Warmup at start; new requests
prefilled as a batch with their own KV blocks (block 0 reserved; `input + max_new + speculate - 1`
tokens); cached batches decoded together (the shard concatenates them); finished requests filtered
out (or the batch cleared when none is left).
"""

from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 16


@dataclass
class Spec:
    """One request: a prompt and its parameters."""

    prompt: str
    max_new_tokens: int = 24
    temperature: float = 1.0
    do_sample: bool = False
    seed: int = 0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class Outcome:
    tokens: list[int] = field(default_factory=list)
    forwards: int = 0  # shard steps (prefill or decode) this request took part in
    finish_reason: int | None = None


@dataclass
class RunStats:
    prefills: int = 0
    decodes: int = 0
    concatenations: int = 0
    filters: int = 0
    clears: int = 0


class ShardClient:
    def __init__(self, address: str, stubs: Path, tokenizer) -> None:
        import grpc

        if str(stubs) not in sys.path:
            sys.path.insert(0, str(stubs))
        self.pb = importlib.import_module("tgi_pb.generate_pb2")
        grpc_module = importlib.import_module("tgi_pb.generate_pb2_grpc")
        self.channel = grpc.insecure_channel(address)
        self.stub = grpc_module.TextGenerationServiceStub(self.channel)
        self.tokenizer = tokenizer
        self.next_block = 1
        self.next_id = 0
        self.next_batch = 0

    def close(self) -> None:
        self.channel.close()

    # -- start-up, like the router -------------------------------------------------------------------
    def start(self):
        pb = self.pb
        self.stub.ClearCache(pb.ClearCacheRequest())
        info = self.stub.Info(pb.InfoRequest())
        warm = self._batch([Spec("Warmup " * 8, max_new_tokens=2)], blocks=False)
        self.stub.Warmup(pb.WarmupRequest(batch=warm, max_input_tokens=1024, max_prefill_tokens=2048,
                                          max_total_tokens=2048))
        self.info = info
        return info

    # -- requests ------------------------------------------------------------------------------------
    def _request(self, spec: Spec, blocks: bool):
        pb = self.pb
        request_id = self.next_id
        self.next_id += 1
        extra = {}
        if blocks:
            tokens = len(self.tokenizer(spec.prompt).input_ids) + 1 + spec.max_new_tokens + self.info.speculate
            count = math.ceil(tokens / BLOCK)
            ids = list(range(self.next_block, self.next_block + count))
            self.next_block += count
            extra = {"blocks": ids, "slots": [s for b in ids for s in range(b * BLOCK, (b + 1) * BLOCK)]}
        return pb.Request(
            id=request_id, inputs=spec.prompt,
            input_chunks=pb.Input(chunks=[pb.InputChunk(text=spec.prompt)]), truncate=1024,
            add_special_tokens=True, prefill_logprobs=False, top_n_tokens=0,
            parameters=pb.NextTokenChooserParameters(
                temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, typical_p=1.0,
                do_sample=spec.do_sample, seed=spec.seed, repetition_penalty=1.0, frequency_penalty=0.0,
                watermark=False),
            stopping_parameters=pb.StoppingCriteriaParameters(max_new_tokens=spec.max_new_tokens, stop_sequences=[],
                                                              ignore_eos_token=True),
            **extra,
        )

    def _batch(self, specs: list[Spec], blocks: bool = True):
        requests = [self._request(s, blocks) for s in specs]
        batch_id = self.next_batch
        self.next_batch += 1
        return self.pb.Batch(id=batch_id, requests=requests, size=len(requests),
                             max_tokens=sum(len(r.slots) for r in requests))

    # -- a continuous batch --------------------------------------------------------------------------
    def run(self, waves: list[tuple[int, list[Spec]]]) -> tuple[list[Outcome], RunStats]:
        """`waves[i] = (step, specs)`: prefill `specs` as a new batch before decode step `step`.

        Returns one outcome per spec (in the order given) and what the client did.
        """
        pb = self.pb
        stats = RunStats()
        outcomes: dict[int, Outcome] = {}
        order: list[int] = []
        cached: list = []  # CachedBatch messages
        pending = sorted(waves, key=lambda w: w[0])
        step = 0
        while pending or cached:
            while pending and pending[0][0] <= step:
                _, specs = pending.pop(0)
                batch = self._batch(specs)
                order.extend(r.id for r in batch.requests)
                for r in batch.requests:
                    outcomes[r.id] = Outcome()
                response = self.stub.Prefill(pb.PrefillRequest(batch=batch))
                stats.prefills += 1
                self._collect(response.generations, outcomes)
                cached.append(self._filter(response.batch if response.HasField("batch") else None, outcomes, stats))
            cached = [b for b in cached if b is not None]
            if cached:
                if len(cached) > 1:
                    stats.concatenations += 1
                response = self.stub.Decode(pb.DecodeRequest(batches=cached))
                stats.decodes += 1
                self._collect(response.generations, outcomes)
                cached = [self._filter(response.batch if response.HasField("batch") else None, outcomes, stats)]
                cached = [b for b in cached if b is not None]
            step += 1
        return [outcomes[i] for i in order], stats

    def _collect(self, generations, outcomes: dict[int, Outcome]) -> None:
        for g in generations:
            outcome = outcomes[g.request_id]
            outcome.forwards += 1
            outcome.tokens.extend(g.tokens.ids)
            if g.HasField("generated_text"):
                outcome.finish_reason = g.generated_text.finish_reason

    def _filter(self, batch, outcomes: dict[int, Outcome], stats: RunStats):
        """Drop finished requests like the router: FilterBatch, or ClearCache when none is left."""
        if batch is None:
            return None
        alive = [r for r in batch.request_ids if outcomes[r].finish_reason is None]
        if len(alive) == len(batch.request_ids):
            return batch
        if not alive:
            self.stub.ClearCache(self.pb.ClearCacheRequest(id=batch.id))
            stats.clears += 1
            return None
        stats.filters += 1
        return self.stub.FilterBatch(self.pb.FilterBatchRequest(batch_id=batch.id, request_ids=alive)).batch
