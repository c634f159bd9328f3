"""The endpoint tier: HTTP tests against a running deployment (`TGI_CSD_URL`, e.g. the chart on a GPU cluster)
serving TGI with `--speculate N --speculation-strategy csd`. Like TGI's own integration tests they use
`text_generation.AsyncClient`. On a GPU the model runs in fp16/bf16, so outputs are compared with the
same server's own outputs (concurrent vs alone, seed vs seed), never with the CPU float32 snapshots.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest

from integration_tests.workload import PROMPTS


@pytest.fixture(scope="session")
def client(http_url):
    from text_generation import AsyncClient

    return AsyncClient(http_url, timeout=300)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_info_reports_the_strategy(http_url):
    info = json.loads(get(f"{http_url}/info"))
    assert info["speculation_strategy"] == "csd"
    assert info["speculate"] > 0


async def test_concurrent_greedy_requests_equal_their_solo_runs(client):
    budgets = [24, 12, 32, 16, 28, 20, 8, 24, 30, 18]
    together = await asyncio.gather(*[client.generate(p, max_new_tokens=n, decoder_input_details=True)
                                      for p, n in zip(PROMPTS[:10], budgets)])
    for prompt, budget, mixed in zip(PROMPTS[:10], budgets, together):
        alone = await client.generate(prompt, max_new_tokens=budget, decoder_input_details=True)
        assert [t.id for t in alone.details.tokens] == [t.id for t in mixed.details.tokens]
        assert mixed.details.generated_tokens <= budget


async def test_seeded_sampling_is_reproducible(client):
    kwargs = {"max_new_tokens": 20, "do_sample": True, "temperature": 0.8, "seed": 1234}
    first = await client.generate(PROMPTS[7], **kwargs)
    second = await client.generate(PROMPTS[7], **kwargs)
    assert first.generated_text == second.generated_text


def test_more_than_one_token_per_target_forward(http_url):
    """tgi_request_skipped_tokens counts accepted draft tokens per request (TGI's own metric)."""
    try:
        metrics = get(f"{http_url}/metrics")
    except OSError:
        pytest.skip("no /metrics on this endpoint")
    skipped = re.search(r"^tgi_request_skipped_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
    generated = re.search(r"^tgi_request_generated_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
    if not skipped or not generated:
        pytest.skip("metrics lack tgi_request_skipped_tokens / tgi_request_generated_tokens")
    forwards = float(generated.group(1)) - float(skipped.group(1))
    assert float(generated.group(1)) / forwards > 1.0
