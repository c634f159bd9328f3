"""Hook specifications of the `tgi_speculation` pluggy project: what a speculation strategy implements.

A strategy package registers a module under the entry-point group `tgi_speculation`; the entry
point's name is the strategy's name (`--speculation-strategy NAME`). That module implements
`tgi_speculation_create` with `pluggy.HookimplMarker("tgi_speculation")` (no import of tgi-csd
needed) and returns a strategy object whose methods implement the per-batch hooks below.

Invariants the host (TGI's shard, through `tgi_csd.plugin.manager`) guarantees:

* `request_ids` are TGI's request ids: unique among live requests, stable across filter and
  concatenate. A request is announced with `tgi_speculation_add` (right after its prefill)
  before it appears in `tgi_speculation_propose`, and is released exactly once, by
  `tgi_speculation_filter` (`removed`) or `tgi_speculation_clear_cache`.
* `histories[i]` is request i's full token history (prompt + every accepted token, including
  this step's); `accepted[i]` counts the tokens this step accepted (1 + accepted draft tokens).

What the strategy guarantees: `propose` returns at most `speculate` ids per request (the host
pads shorter rows and refuses longer ones: the verify forward writes exactly `speculate` KV
slots past each request, so one more would overwrite another request's cache). Every row empty
means no speculation this step: the host passes no speculative ids and the shard decodes one
token per request (TGI 3.3.7 takes `speculative_ids=None` as it does after merging batches).
"""

from __future__ import annotations

import pluggy

PROJECT = "tgi_speculation"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def tgi_speculation_create(model, tokenizer, device, speculate, config, model_id, dtype, vocab_size):
    """Build this strategy for one shard; return the strategy object (a pluggy plugin).

    Called once, only on the selected strategy's module, before the shard's warmup (so memory
    taken by draft models is seen when the KV cache is sized).

    :param model: the shard's target model (TGI's `Model`; opaque to strategies that don't need it)
    :param tokenizer: the target's tokenizer
    :param device: the torch device the shard runs on
    :param speculate: S, the fixed number of draft ids per request per step
    :param config: the value of `--speculation-config` (a path) or None
    :param model_id: the model id or folder the shard was started with
    :param dtype: the shard's torch dtype
    :param vocab_size: the target's vocabulary size (rows of its output head)
    """


@hookspec
def tgi_speculation_add(request_ids, histories, speculation):
    """Requests joined (their prefill just ran): `histories[i]` is prompt + first token; `speculation[i]` is
    what request i asked for (`auto`, `off` or one of `tgi_speculation_profiles`; the router validated it)."""


@hookspec(firstresult=True)
def tgi_speculation_profiles():
    """What a request's `speculation` may name: `auto`, `off` and the strategy's profiles (not implemented:
    requests cannot choose)."""


@hookspec(firstresult=True)
def tgi_speculation_report(request_id):
    """What speculation did for live request `request_id`: a dict with `profile`, `target_forwards` (forwards
    it took part in, its prefill included) and `drafters` (name -> {"proposed", "accepted"} draft tokens);
    None if the strategy does not report. Asked when the request finishes, before it is released."""


@hookspec(firstresult=True)
def tgi_speculation_propose(batch_id, request_ids, histories, accepted, speculate):
    """Draft ids for every request of one batch: a `[B][<= speculate]` list of lists or a `[B, S]` tensor."""


@hookspec
def tgi_speculation_filter(batch_id, request_ids, removed):
    """Batch `batch_id` now holds `request_ids`, in that order; the requests `removed` are gone."""


@hookspec
def tgi_speculation_concatenate(batch_ids, batch_id, request_ids):
    """Batches `batch_ids` were merged into batch `batch_id` holding `request_ids`, in that order."""


@hookspec
def tgi_speculation_clear_cache(batch_id, request_ids):
    """Batch `batch_id` (None: every batch) was dropped; the requests `request_ids` are gone."""


@hookspec
def tgi_speculation_fault(hook, error):
    """Hook `hook` failed inside TGI (`error`: what it raised, or a `StrategyError` for a proposal that broke
    the `[B, S]` contract); the host decoded that step without speculation. For counting and logging only:
    an exception raised here is ignored."""


@hookspec(firstresult=True)
def tgi_speculation_stats():
    """A JSON-able dict of the strategy's counters (proposed / accepted draft tokens, forwards, ...)."""
