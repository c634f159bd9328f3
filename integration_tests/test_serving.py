"""What every serving tier must do over HTTP, run once per tier: `live` (the real patched launcher, router and
Python shard as processes) and `container` (the CPU test image run with the chart's container spec), both in
float32 on CPU, driven with `text_generation.AsyncClient` (raw HTTP where the client lacks a route).
Exactness is always against another server of the same tier, plain decoding (no speculation arguments),
never a server against itself."""

from __future__ import annotations

import asyncio
import re

import pytest

from integration_tests.live import SPECULATE
from integration_tests.workload import BUDGETS, PROMPTS, chat, stream_tokens


@pytest.fixture(scope="module", params=["live", "container"])
def tier(request):
    """`tier(name)`: the tier's "plain" (reference) or "csd" (`--speculation-strategy csd`, MaG default) server."""
    return request.getfixturevalue({"live": "live_servers", "container": "containers"}[request.param])


def test_info_reports_speculate_and_the_strategy(tier):
    info = tier("csd").info()
    assert info["speculate"] == SPECULATE and info["speculation_strategy"] == "csd"
    plain = tier("plain").info()
    assert plain["speculate"] == 0 and not plain.get("speculation_strategy")


def test_greedy_generate_identical_to_plain_decoding(tier, greedy):
    """12 concurrent requests of different lengths, so they join and leave shared batches."""
    reference = greedy(tier("plain"))
    lengths = [len(tokens) for tokens in reference]
    assert all(0 < n <= budget for n, budget in zip(lengths, BUDGETS)) and len(set(lengths)) >= 8
    assert greedy(tier("csd")) == reference


def test_generate_stream_identical_to_plain_decoding(tier, greedy):
    url = tier("csd").url

    async def all_streams():
        return await asyncio.gather(*[stream_tokens(url, p, n) for p, n in zip(PROMPTS[:6], BUDGETS[:6])])

    assert asyncio.run(all_streams()) == greedy(tier("plain"))[:6]


def test_seeded_sampling_is_reproducible(tier):
    from text_generation import Client

    client = Client(tier("csd").url, timeout=600)
    kwargs = {"max_new_tokens": 20, "do_sample": True, "temperature": 0.8, "seed": 1234}
    first, second = client.generate(PROMPTS[7], **kwargs), client.generate(PROMPTS[7], **kwargs)
    assert first.generated_text and first.generated_text == second.generated_text


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_completions_identical_to_plain_decoding(tier, stream):
    expected = chat(tier("plain").url, stream=False)
    assert expected
    assert chat(tier("csd").url, stream) == expected


def test_the_router_counted_accepted_draft_tokens(tier, greedy):
    """TGI's own metric: tokens accepted beyond one per step (so the strategy really drafted)."""
    server = tier("csd")
    greedy(server)
    skipped = re.search(r"^tgi_request_skipped_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", server.get("/metrics"), re.M)
    assert skipped and float(skipped.group(1)) > 0


def test_the_strategys_metrics_are_served(tier, greedy):
    server = tier("csd")
    greedy(server)
    metrics = server.get("/metrics", port="csd-metrics")
    steps = re.search(r"^tgi_csd_steps_total ([0-9.e+]+)$", metrics, re.M)
    accepted = re.findall(r'^tgi_csd_spec_decode_num_accepted_tokens_total\{[^}]*\} ([0-9.e+]+)$', metrics, re.M)
    assert steps and float(steps.group(1)) > 0
    assert accepted and sum(float(a) for a in accepted) > 0
