"""The live tier: the real patched launcher, router and Python shard (float32 on CPU), driven over HTTP with
`text_generation.AsyncClient` (and raw HTTP where the client lacks a route). Every exactness check compares
against another server, never a server with itself: the same launcher with `--speculate 0` (plain decoding)
and with stock `--speculate N` (TGI's own n-gram, no strategy)."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

from integration_tests.workload import BUDGETS, PROMPTS, chat, greedy_batch, stream_tokens

S = 4
SERVERS = {
    "plain": {},
    "stock": {"speculate": S},
    "csd": {"speculate": S, "strategy": "csd"},
    "distilled": {"speculate": S, "strategy": "csd", "config": "examples/tgi-csd-distilled.yaml"},
    "adaptive": {"speculate": S, "strategy": "csd", "config": "examples/tgi-adaptive.yaml"},
}


@pytest.fixture(scope="module")
def outputs(live_servers):
    return {name: asyncio.run(greedy_batch(live_servers(name, **options).url)) for name, options in SERVERS.items()}


def test_info_reports_speculate_and_the_strategy(live_servers):
    info = live_servers("csd", **SERVERS["csd"]).info()
    assert info["speculate"] == S and info["speculation_strategy"] == "csd"
    stock = live_servers("stock", **SERVERS["stock"]).info()
    assert stock["speculate"] == S and not stock.get("speculation_strategy")
    assert live_servers("plain").info()["speculate"] == 0


def test_the_workload_mixes_lengths(outputs):
    """Requests of different lengths leave the shared batch at different steps (EOS may end one early)."""
    lengths = [len(tokens) for tokens in outputs["plain"]]
    assert all(0 < n <= budget for n, budget in zip(lengths, BUDGETS))
    assert len(set(lengths)) >= 8


@pytest.mark.parametrize("name", ["stock", "csd", "distilled", "adaptive"])
def test_greedy_generate_identical_to_plain_decoding(outputs, name):
    assert outputs[name] == outputs["plain"]


def test_speculation_took_draft_tokens(live_servers, outputs):
    """The router's own metric: tokens accepted beyond one per step (so the strategy really drafted)."""
    metrics = live_servers("csd", **SERVERS["csd"]).get("/metrics")
    skipped = re.search(r"^tgi_request_skipped_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
    assert skipped and float(skipped.group(1)) > 0


def test_generate_stream_identical_to_plain_decoding(live_servers, outputs):
    url = live_servers("csd", **SERVERS["csd"]).url

    async def all_streams():
        return await asyncio.gather(*[stream_tokens(url, p, n) for p, n in zip(PROMPTS[:6], BUDGETS[:6])])

    assert asyncio.run(all_streams()) == outputs["plain"][:6]


def test_seeded_sampling_is_reproducible(live_servers):
    from text_generation import Client

    client = Client(live_servers("csd", **SERVERS["csd"]).url, timeout=600)
    kwargs = {"max_new_tokens": 20, "do_sample": True, "temperature": 0.8, "seed": 1234}
    first, second = client.generate(PROMPTS[7], **kwargs), client.generate(PROMPTS[7], **kwargs)
    assert first.generated_text and first.generated_text == second.generated_text


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_completions_identical_to_plain_decoding(live_servers, stream):
    expected = chat(live_servers("plain").url, stream=False)
    assert expected
    assert chat(live_servers("csd", **SERVERS["csd"]).url, stream) == expected


def test_the_strategys_metrics_are_served(live_servers, outputs):
    server = live_servers("csd", **SERVERS["csd"])
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30) as response:
        metrics = response.read().decode()
    steps = re.search(r"^tgi_csd_steps_total ([0-9.e+]+)$", metrics, re.M)
    accepted = re.findall(r'^tgi_csd_spec_decode_num_accepted_tokens_total\{[^}]*\} ([0-9.e+]+)$', metrics, re.M)
    assert steps and float(steps.group(1)) > 0
    assert accepted and sum(float(a) for a in accepted) > 0


def test_an_unknown_strategy_stops_the_launcher_with_one_line(live_env):
    status, output = live_env.run_to_exit("nope", speculate=S, strategy="nope")
    assert status != 0
    assert "--speculation-strategy: unknown strategy 'nope'; installed: csd, ngram" in output


def test_a_strategy_without_speculate_is_refused_by_the_launcher(live_env):
    status, output = live_env.run_to_exit("nospec", strategy="csd")
    assert status != 0
    assert "`--speculation-strategy csd` needs `--speculate N` (N > 0)" in output
