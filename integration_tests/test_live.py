"""The live tier's own checks (the checks every tier shares are in `test_serving.py`): the real patched
launcher, router and Python shard (float32 on CPU) over HTTP. The cascades the project sells, not only the
MaG default, are exact against plain decoding and against stock `--speculate N` (TGI's own n-gram), each a
separate server; the launcher refuses bad strategy flags with the plugin's one-line error."""

from __future__ import annotations

import pytest

from integration_tests.live import SPECULATE


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
