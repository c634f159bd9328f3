"""The live tier's own checks (the checks every tier shares are in `test_serving.py`): the real patched
launcher, router and Python shard (float32 on CPU) over HTTP. The cascades the project sells, not only the
MaG default, are exact against plain decoding and against stock `--speculate N` (TGI's own n-gram), each a
separate server; the launcher refuses bad strategy flags with the plugin's one-line error."""

from __future__ import annotations

import json
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


# -- per-request speculation (examples/tgi-profiles.yaml: auto = MaG 2 ids, long = 4, short = 1) --------------
CHOICES = ["off", "auto", "long", "short", None, "long", "off", "short", "auto", "long", "short", "off"]


@pytest.fixture(scope="module")
def mixed(live_servers):
    import asyncio

    from integration_tests.workload import generate_with_speculation

    return asyncio.run(generate_with_speculation(live_servers("profiles").url, CHOICES))


def test_info_lists_the_speculation_profiles(live_servers):
    info = live_servers("profiles").info()
    assert info["speculation_strategy"] == "csd"
    assert info["speculation_profiles"] == ["auto", "off", "long", "short"]
    assert live_servers("stock").info()["speculation_profiles"] == []  # no strategy: requests cannot choose


def test_a_mixed_batch_of_off_auto_and_profiles_is_identical_to_plain_decoding(live_servers, greedy, mixed):
    """12 concurrent requests, each choosing off, auto (or nothing), long or short, in shared batches."""
    assert [[t["id"] for t in answer["details"]["tokens"]] for answer in mixed] == greedy(live_servers("plain"))


def test_each_response_says_what_speculation_did(mixed):
    for choice, answer in zip(CHOICES, mixed):
        report = answer["details"]["speculation"]
        assert report["profile"] == (choice or "auto")
        generated = answer["details"]["generated_tokens"]
        assert 1 <= report["target_forwards"] <= generated
        assert report["tokens_per_target_forward"] == pytest.approx(generated / report["target_forwards"], rel=1e-3)
        drafted = {d["name"]: d for d in report["drafters"]}
        if choice == "off":
            assert drafted == {}  # nothing proposed (TGI still verifies the row's padding)
        else:
            assert set(drafted) <= {"mag"}
            assert all(d["accepted"] <= d["proposed"] for d in drafted.values())
    accepted = sum(d["accepted"] for a in mixed for d in a["details"]["speculation"]["drafters"])
    assert accepted > 0
    for choice, answer in zip(CHOICES, mixed):  # shown with -s
        print(f"{choice or 'unset':6} {json.dumps(answer['details']['speculation'])}")


def test_the_metrics_count_requests_and_draft_tokens_by_profile(live_servers, mixed):
    metrics = live_servers("profiles").get("/metrics", port="csd-metrics")

    def total(name: str, profile: str) -> float:
        found = re.findall(rf'^tgi_csd_{name}_total\{{[^}}]*profile="{profile}"[^}}]*\}} ([0-9.e+]+)$', metrics, re.M)
        return sum(float(v) for v in found)

    for profile in ("off", "auto", "long", "short"):
        reports = [a["details"]["speculation"] for a in mixed if a["details"]["speculation"]["profile"] == profile]
        assert total("profile_requests", profile) >= len(reports)  # warmup and other tests may add
        proposed = sum(d["proposed"] for r in reports for d in r["drafters"])
        assert total("profile_draft_tokens", profile) >= proposed
    assert total("profile_draft_tokens", "off") == 0
    # MaG's store (examples/tgi-profiles.yaml) holds finished requests, within its 16 MiB
    stored = re.search(r'^tgi_csd_suffix_store_sequences\{drafter="mag"\} ([0-9.e+]+)$', metrics, re.M)
    charged = re.search(r'^tgi_csd_suffix_store_bytes\{drafter="mag"\} ([0-9.e+]+)$', metrics, re.M)
    assert stored and float(stored.group(1)) >= 1
    assert charged and 0 < float(charged.group(1)) <= 16 * 2**20


@pytest.mark.parametrize("route, body", [
    ("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "speculation": "turbo"}}),
    ("/v1/chat/completions", {"model": "tgi", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                              "speculation": "turbo"}),
    ("/v1/completions", {"model": "tgi", "prompt": "Hello", "max_tokens": 4, "speculation": "turbo"}),
])
def test_an_unknown_profile_is_refused_naming_the_profiles(live_servers, route, body):
    from integration_tests.workload import post

    status, answer = post(live_servers("profiles").url, route, body)
    assert status == 422, answer
    assert "`speculation` must be one of: auto, off, long, short. Given: turbo" in answer["error"]


def test_chat_and_completions_take_a_profile(live_servers):
    from integration_tests.workload import post

    url = live_servers("profiles").url
    chat = {"model": "tgi", "messages": [{"role": "user", "content": "List three colours."}], "max_tokens": 16,
            "temperature": 0}
    answers = [post(url, "/v1/chat/completions", {**chat, "speculation": choice}) for choice in ("off", "long")]
    assert all(status == 200 for status, _ in answers)
    assert answers[0][1]["choices"][0]["message"]["content"] == answers[1][1]["choices"][0]["message"]["content"]
