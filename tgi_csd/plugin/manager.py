"""Loads speculation strategies through pluggy and drives the selected one for a TGI shard.

`StrategyManager` finds strategies by entry point (group `tgi_speculation`: built-in ones and
third parties' alike) and creates one. The `ActiveStrategy` it returns turns TGI's batch events
into the hooks of `tgi_csd.plugin.hookspecs`, holds the host's view of every live request (its
batch, so `filter` and `clear_cache` can name the requests that left, and its token history), and
shapes every proposal into exactly `[B, S]`.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from tgi_csd.errors import ConfigError
from tgi_csd.plugin import hookspecs

ENTRY_POINT_GROUP = "tgi_speculation"


class StrategyError(RuntimeError):
    """A strategy broke its contract (e.g. proposed more than `speculate` ids)."""


class StrategyManager:
    """The strategies installed in this environment (entry points), plus any registered by hand."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if load_entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)

    def register(self, plugin: object, name: str) -> None:
        """Add a strategy module/object by hand (tests; strategies not installed as a package)."""
        self.pm.register(plugin, name=name)

    def installed(self) -> list[str]:
        """Names of the strategies that can be created, sorted."""
        return sorted({impl.plugin_name for impl in self.pm.hook.tgi_speculation_create.get_hookimpls()})

    def create(self, name: str, *, speculate: int, model: Any = None, tokenizer: Any = None, device: Any = None,
               config: str | None = None, model_id: str | None = None, dtype: Any = None,
               vocab_size: int | None = None) -> ActiveStrategy:
        installed = self.installed()
        if name not in installed:
            raise ConfigError(
                f"--speculation-strategy: unknown strategy {name!r}; installed: {', '.join(installed) or 'none'} "
                f"(strategies register under the entry-point group {ENTRY_POINT_GROUP!r})"
            )
        if not speculate or speculate <= 0:
            raise ConfigError(
                f"--speculation-strategy {name}: needs --speculate N with N > 0 (the number of draft ids per "
                "step, which sizes each request's KV slots)"
            )
        others = [plugin for plugin_name, plugin in self.pm.list_name_plugin() if plugin_name != name]
        create = self.pm.subset_hook_caller("tgi_speculation_create", remove_plugins=others)
        strategy = create(model=model, tokenizer=tokenizer, device=device, speculate=speculate, config=config,
                          model_id=model_id, dtype=dtype, vocab_size=vocab_size)
        if strategy is None:
            raise StrategyError(f"strategy {name!r}: tgi_speculation_create returned None")
        return ActiveStrategy(name, strategy, speculate, device, vocab_size)


@dataclass
class LiveRequest:
    """The host's view of a live request: its batch, and its token history (prompt + accepted tokens)."""

    batch_id: int
    history: list[int]


class ActiveStrategy:
    """One created strategy, driven by batch events.

    Invariants: every live request is in exactly one batch of `batches` and has one `live` entry;
    a request is announced to the strategy (`add`) once and released once (`filter` / `clear_cache`).
    """

    def __init__(self, name: str, strategy: object, speculate: int, device: Any = None,
                 vocab_size: int | None = None) -> None:
        self.name = name
        self.strategy = strategy
        self.speculate = speculate
        self.device = device
        self.vocab_size = vocab_size
        # Only the strategy object answers the per-batch hooks (its module answered `create`).
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(strategy, name=name)
        self.hook = self.pm.hook
        self.batches: dict[int, list[int]] = {}
        self.live: dict[int, LiveRequest] = {}
        self.proposals = 0
        self.faults: dict[str, int] = {}

    # -- membership ------------------------------------------------------------------------------
    def _set_batch(self, batch_id: int, request_ids: Sequence[int]) -> None:
        self.batches[batch_id] = list(request_ids)
        for request_id in request_ids:
            self.live[request_id].batch_id = batch_id

    def _release(self, request_ids: list[int]) -> None:
        for request_id in request_ids:
            request = self.live.pop(request_id, None)
            members = None if request is None else self.batches.get(request.batch_id)
            if members is not None and request_id in members:
                members.remove(request_id)
                if not members:
                    del self.batches[request.batch_id]

    @property
    def live_requests(self) -> list[int]:
        return list(self.live)

    def history(self, request_id: int) -> list[int] | None:
        """A live request's token history (the list the host grows each step), or None."""
        request = self.live.get(request_id)
        return None if request is None else request.history

    # -- events ----------------------------------------------------------------------------------
    @staticmethod
    def _anonymous(request_ids: Sequence[int]) -> bool:
        """A batch whose ids repeat: TGI's warmup batch (every request has id 0). It is not speculated on and
        never reaches the strategy, whose rows are keyed by request id."""
        return len(set(request_ids)) != len(request_ids)

    def add(self, batch_id: int, request_ids: Sequence[int], histories: Sequence[list[int]],
            speculation: Sequence[str] | None = None) -> None:
        """Requests of a freshly prefilled batch (`speculation[i]`: request i's choice, `auto` when not given).
        Ids still held from a batch that was never released (e.g. warmup) are released first, so their stale
        state is not reused."""
        if self._anonymous(request_ids):
            return
        stale: dict[int, list[int]] = {}
        for request_id in request_ids:
            if request_id in self.live:
                stale.setdefault(self.live[request_id].batch_id, []).append(request_id)
        for old_batch, ids in stale.items():
            self._release(ids)
            self.hook.tgi_speculation_clear_cache(batch_id=old_batch, request_ids=ids)
        for request_id, history in zip(request_ids, histories):
            self.live[request_id] = LiveRequest(batch_id, history)
        self.hook.tgi_speculation_add(request_ids=list(request_ids), histories=list(histories),
                                      speculation=list(speculation or ["auto"] * len(request_ids)))
        previous = self.batches.get(batch_id, [])
        self._set_batch(batch_id, [*previous, *request_ids])

    def propose(self, batch_id: int, request_ids: Sequence[int], histories: Sequence[list[int]],
                accepted: Sequence[int]):
        """Exactly `[B, S]` draft ids (a torch tensor on `self.device`), or None when no row drafted."""
        if self._anonymous(request_ids):
            return None
        unknown = [i for i, r in enumerate(request_ids) if r not in self.live]
        if unknown:  # never announced (the host missed a prefill): announce now
            self.add(batch_id, [request_ids[i] for i in unknown], [histories[i] for i in unknown])
        self._set_batch(batch_id, request_ids)
        result = self.hook.tgi_speculation_propose(
            batch_id=batch_id, request_ids=list(request_ids), histories=list(histories),
            accepted=list(accepted), speculate=self.speculate,
        )
        self.proposals += 1
        return self.shape(result, request_ids, histories)

    def filter(self, batch_id: int, request_ids: Sequence[int]) -> list[int]:
        """Batch `batch_id` kept `request_ids` (in that order); returns the ids that left."""
        kept = set(request_ids)
        removed = [r for r in self.batches.get(batch_id, []) if r not in kept]
        self._release(removed)
        self._set_batch(batch_id, request_ids)
        self.hook.tgi_speculation_filter(batch_id=batch_id, request_ids=list(request_ids), removed=removed)
        return removed

    def concatenate(self, batch_ids: Sequence[int], batch_id: int, request_ids: Sequence[int]) -> None:
        for old in batch_ids:
            self.batches.pop(old, None)
        self._set_batch(batch_id, request_ids)
        self.hook.tgi_speculation_concatenate(batch_ids=list(batch_ids), batch_id=batch_id,
                                              request_ids=list(request_ids))

    def clear_cache(self, batch_id: int | None = None) -> list[int]:
        """Drop one batch (or all); returns the request ids released."""
        if batch_id is None:
            removed = list(self.live)
            self.batches.clear()
            self.live.clear()
        else:
            removed = list(self.batches.get(batch_id, []))
            self._release(removed)
            self.batches.pop(batch_id, None)
        self.hook.tgi_speculation_clear_cache(batch_id=batch_id, request_ids=removed)
        return removed

    def fault(self, hook: str, error: BaseException) -> None:
        """Hook `hook` failed inside TGI and the host decoded that step without speculation: tell the
        strategy (for its metrics). Its own failure to count is ignored: counting must not fault again."""
        self.faults[hook] = self.faults.get(hook, 0) + 1
        with contextlib.suppress(Exception):
            self.hook.tgi_speculation_fault(hook=hook, error=error)

    def profiles(self) -> list[str]:
        """What a request's `speculation` may name (empty: requests cannot choose)."""
        return list(self.hook.tgi_speculation_profiles() or [])

    def report(self, request_id: int) -> dict | None:
        """What speculation did for live request `request_id` (None when the strategy does not say)."""
        return self.hook.tgi_speculation_report(request_id=request_id)

    def stats(self) -> dict:
        stats = self.hook.tgi_speculation_stats() or {}
        return {"strategy": self.name, "speculate": self.speculate, "proposals": self.proposals,
                "faults": dict(self.faults), **stats}

    # -- the [B, S] contract ---------------------------------------------------------------------
    def shape(self, result, request_ids: Sequence[int], histories: Sequence[list[int]]):
        """Pad each row to S (repeating its last draft id, or its last token); refuse more than S ids in a
        row and ids outside `[0, vocab_size)` (checked on the host: on a GPU a bad id is a device-side assert
        that kills the process). Every row empty: None (no speculative ids this step)."""
        import torch

        size, width = len(request_ids), self.speculate
        if result is None:
            raise StrategyError(f"strategy {self.name!r}: tgi_speculation_propose returned None")
        if isinstance(result, torch.Tensor):
            if result.dim() != 2 or result.shape[0] != size:
                raise StrategyError(
                    f"strategy {self.name!r}: proposed a tensor of shape {tuple(result.shape)}; expected [{size}, "
                    f"<= {width}]"
                )
            rows = result.tolist()  # the one transfer of the proposal; checked below on the host
        else:
            rows = [list(row) for row in result]
            if len(rows) != size:
                raise StrategyError(f"strategy {self.name!r}: proposed {len(rows)} rows for a batch of {size}")
        if not any(rows):
            return None
        padded = []
        for request_id, row, history in zip(request_ids, rows, histories):
            if len(row) > width:
                raise StrategyError(
                    f"strategy {self.name!r}: proposed {len(row)} ids for request {request_id}, more than "
                    f"speculate={width}; the verify forward has exactly {width} KV slots per request, so more would "
                    "overwrite another request's cache"
                )
            try:
                ids = [operator.index(t) for t in row]
            except TypeError as e:
                raise StrategyError(f"strategy {self.name!r}: proposed a non-integer id for request {request_id}: "
                                    f"{e}") from e
            bad = [t for t in ids if not 0 <= t < (self.vocab_size or 2**63)]
            if bad:
                raise StrategyError(
                    f"strategy {self.name!r}: proposed ids {bad[:3]} for request {request_id}, outside the "
                    f"vocabulary [0, {self.vocab_size})"
                )
            fill = ids[-1] if ids else (history[-1] if history else 0)
            padded.append(ids + [int(fill)] * (width - len(ids)))
        return torch.tensor(padded, dtype=torch.int64, device=self.device).reshape(size, width)
