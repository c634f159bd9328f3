"""The live tier's own checks (the checks every tier shares are in `test_serving.py`): the real patched
launcher, router and Python shard (float32 on CPU) over HTTP. The cascades the project sells, not only the
MaG default, are exact against plain decoding and against stock `--speculate N` (TGI's own n-gram), each a
separate server; the launcher refuses bad strategy flags with the plugin's one-line error."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from integration_tests.live import SPECULATE, live_server
from integration_tests.shardable_model import shardable_model


def test_stock_speculation_names_no_strategy(live_servers):
    info = live_servers("stock").info()
    assert info["speculate"] == SPECULATE and not info.get("speculation_strategy")


@pytest.mark.parametrize("name", ["stock", "distilled", "adaptive"])
def test_greedy_generate_identical_to_plain_decoding(live_servers, greedy, name):
    assert greedy(live_servers(name)) == greedy(live_servers("plain"))


def test_an_unknown_strategy_stops_the_launcher_with_one_line(live_env):
    status, output = live_env.run_to_exit("nope", speculate=SPECULATE, strategy="nope")
    assert status != 0
    assert "--speculation-strategy: unknown strategy 'nope'; installed: csd, ngram" in output


def test_a_strategy_without_speculate_is_refused_by_the_launcher(live_env):
    status, output = live_env.run_to_exit("nospec", strategy="csd")
    assert status != 0
    assert "`--speculation-strategy csd` needs `--speculate N` (N > 0)" in output


def test_tensor_parallel_csd_adaptive_identical_to_one_shard(live_env, greedy):
    """`--num-shard 2` (gloo on CPU): only rank 0 runs csd with `adaptive:`, whose on/off choice each step
    follows rank 0's own timings; its broadcast keeps both ranks verifying the same ids. Exact against one
    shard without speculation, and no hang (the workload finishes within the client's timeout)."""
    model = shardable_model(live_env.work.parent / "shardable-llama", live_env.model)
    config = live_env.work / "tp-adaptive.yaml"
    config.write_text(yaml.safe_dump({"target": {"model": "shard"}, "drafters": [{"type": "mag"}],
                                      "k_matrix": [[SPECULATE]], "adaptive": {}}))
    with live_server(live_env.bin_dir, live_env.venv, model, live_env.work, "tp-plain") as plain:
        reference = greedy(plain)
    with live_server(live_env.bin_dir, live_env.venv, model, live_env.work, "tp-csd", speculate=SPECULATE,
                     strategy="csd", config=str(config), extra=("--num-shard", "2")) as sharded:
        started = time.monotonic()
        outputs = greedy(sharded)
        print(f"\n--num-shard 2, csd adaptive: {sum(map(len, outputs))} tokens in {time.monotonic() - started:.1f} s")
        log = sharded.log_path.read_text(errors="replace")
        skipped = re.search(r"^tgi_request_skipped_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", sharded.get("/metrics"),
                            re.M)
    assert outputs == reference
    assert "Using speculation strategy csd" in log and "rank 1 verifies rank 0's proposals" in log
    assert skipped and float(skipped.group(1)) > 0  # rank 0's drafts were verified by both ranks
