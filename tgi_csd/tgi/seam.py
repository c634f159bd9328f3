"""The TGI side of the strategy seam: reads TGI's batch objects and drives an `ActiveStrategy`.

TGI's patched server (`text_generation_server/utils/speculation_strategy.py`, added by
`patches/0001-*.patch`) calls these methods; this module is the only one in tgi-csd that knows
TGI's `FlashCausalLMBatch` fields. Imported only when a strategy is selected.

Histories: each live request's token history is a Python list the `ActiveStrategy` holds, read once
from `all_input_ids_tensor` right after the request's prefill, then grown here by the tokens each step
accepted. Its length is checked against TGI's (`cache_lengths + input_lengths + accepted`) every
step; on a mismatch the row is read again from the device tensor. The seam itself holds no state.
"""

from __future__ import annotations

import logging

import torch

from tgi_csd.plugin.manager import ActiveStrategy, StrategyManager

log = logging.getLogger(__name__)


class TGISeam:
    def __init__(self, active: ActiveStrategy) -> None:
        self.active = active

    @property
    def name(self) -> str:
        return self.active.name

    @classmethod
    def load(cls, model, name: str, config: str | None, speculate: int | None = None,
             manager: StrategyManager | None = None) -> TGISeam:
        """Create strategy `name` for TGI model `model` (before Warmup)."""
        if speculate is None:
            from text_generation_server.utils.speculate import get_speculate

            speculate = get_speculate()
        manager = manager or StrategyManager()
        if not hasattr(model, "batch_type") or not hasattr(model.batch_type, "concatenate") or \
                "FlashCausalLM" not in [k.__name__ for k in type(model).__mro__]:
            from tgi_csd.errors import ConfigError

            raise ConfigError(
                f"--speculation-strategy {name}: model class {type(model).__name__} has no speculation (only "
                "FlashCausalLM and its subclasses speculate in TGI 3.3.7; on CPU that needs the IPEX backend)"
            )
        config_obj = getattr(model, "config", None)
        vocab_size = getattr(config_obj, "vocab_size", None) or len(model.tokenizer)
        active = manager.create(
            name, speculate=speculate, model=model, tokenizer=model.tokenizer, device=model.device, config=config,
            model_id=getattr(model, "model_id", None), dtype=getattr(model, "dtype", None), vocab_size=vocab_size,
        )
        return cls(active)

    # -- the proposal seam -----------------------------------------------------------------------
    def propose(self, batch, accepted_ids: torch.Tensor, next_input_ids: torch.Tensor,
                cu_accepted_ids: torch.Tensor, prefill: bool) -> torch.Tensor | None:
        """`[B, S]` draft ids for `batch`, or None (speculation off this step), called in
        `FlashCausalLM.generate_token` right before `batch.speculative_ids = speculative_ids`
        (the batch's lengths are not yet advanced)."""
        request_ids = [r.id for r in batch.requests]
        rows = len(request_ids)
        # One device-to-host transfer for the step: lengths, accepted counts, their offsets, the new tokens.
        lengths_now = batch.cache_lengths_tensor + batch.input_lengths_tensor + accepted_ids
        packed = torch.cat([t.to(torch.int64) for t in (lengths_now, accepted_ids, cu_accepted_ids,
                                                          next_input_ids)]).tolist()
        lengths, accepted = packed[:rows], packed[rows:2 * rows]
        cu, tokens = packed[2 * rows:3 * rows + 1], packed[3 * rows + 1:]
        fresh = [i for i, r in enumerate(request_ids) if prefill or self.active.history(r) is None]
        if fresh:
            width = max(lengths[i] for i in fresh)
            rows = batch.all_input_ids_tensor[fresh, :width].tolist()
            self.active.add(batch.batch_id, [request_ids[i] for i in fresh],
                            [rows[slot][: lengths[i]] for slot, i in enumerate(fresh)],
                            [requested_speculation(batch.requests[i]) for i in fresh])
        fresh_set = set(fresh)
        if len(fresh) < len(request_ids):
            for i, request_id in enumerate(request_ids):
                if i in fresh_set:
                    continue
                history = self.active.history(request_id)
                if len(history) + accepted[i] == lengths[i]:
                    history.extend(tokens[cu[i]:cu[i + 1]])
                else:  # out of step (should not happen): read the row again
                    log.warning("speculation seam: request %s history out of step; re-reading it", request_id)
                    history[:] = batch.all_input_ids_tensor[i, : lengths[i]].tolist()
        histories = [self.active.history(r) for r in request_ids]
        return self.active.propose(batch.batch_id, request_ids, histories, accepted)

    # -- lifecycle -------------------------------------------------------------------------------
    def filter(self, batch) -> None:
        self.active.filter(batch.batch_id, [r.id for r in batch.requests])

    def concatenate(self, batch_ids, batch) -> None:
        self.active.concatenate(list(batch_ids), batch.batch_id, [r.id for r in batch.requests])

    def clear_cache(self, batch_id: int | None) -> None:
        self.active.clear_cache(batch_id)

    def fault(self, hook: str, error: BaseException) -> None:
        """The patched server caught `error` from hook `hook` and decoded that step without speculation."""
        self.active.fault(hook, error)

    def stats(self) -> dict:
        return self.active.stats()

    def profiles(self) -> list[str]:
        """What a request's `speculation` may name (the router validates requests against it)."""
        return self.active.profiles()

    def report(self, request_id: int) -> dict | None:
        """What speculation did for request `request_id`, for its response's details."""
        return self.active.report(request_id)


def requested_speculation(request) -> str:
    """A request's `speculation` (its generate_pb2.Request): `auto` when unset (an unset string field reads
    empty) or when the stubs predate the field."""
    return getattr(request, "speculation", "") or "auto"
