"""`text-generation-server` for the local-shard tier, optionally in float32.

TGI's CLI offers only `--dtype float16|bfloat16`, and on CPU its flash models default to bfloat16,
but the model classes take any torch dtype. For exact comparisons the suite runs the real shard in
float32: with `TGI_CSD_SHARD_DTYPE=float32` this wrapper passes `dtype=float32` (and a float32 KV
cache) to `FlashCausalLM.__init__`, then runs TGI's own CLI unchanged. With `TGI_CSD_TEST_STRATEGY=faulty`
it also registers `faulty_strategy.py` (the fault test's strategy). Test-only.
"""

import os
import sys


def main() -> None:
    dtype = os.environ.get("TGI_CSD_SHARD_DTYPE", "")
    if dtype and dtype != "default":
        import torch
        from text_generation_server.models import flash_causal_lm

        forced = getattr(torch, dtype)
        original = flash_causal_lm.FlashCausalLM.__init__

        def __init__(self, *args, **kwargs):
            kwargs["dtype"] = forced
            kwargs["kv_cache_dtype"] = forced
            original(self, *args, **kwargs)

        flash_causal_lm.FlashCausalLM.__init__ = __init__
    if os.environ.get("TGI_CSD_TEST_STRATEGY") == "faulty":  # the fault test's strategy, registered by hand
        import faulty_strategy

        from tgi_csd.plugin import manager

        load = manager.StrategyManager.__init__

        def __init__(self, load_entry_points: bool = True) -> None:
            load(self, load_entry_points)
            self.register(faulty_strategy, "faulty")

        manager.StrategyManager.__init__ = __init__
    from text_generation_server.cli import app

    sys.argv[0] = "text-generation-server"
    app()


if __name__ == "__main__":
    main()
