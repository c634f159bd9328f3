"""The real TGI v3.3.7 shard (patched) on CPU, driven over gRPC like the router: CS Drafting inside TGI.

Float32 throughout (see shard/serve.py): TGI verifies drafts by exact match of the target's own
choice, so greedy outputs must not depend on the strategy, and in float32 they must not depend on
the batch shape either. One bf16 comparison at the end records what bf16 changes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from integration_tests.shard import build
from integration_tests.shard.client import Spec
from integration_tests.workload import PROMPTS

S = 4
CONFIGS = {
    "spec0": {},
    "stock": {"speculate": S},  # TGI's built-in n-gram, no strategy
    "ngram": {"speculate": S, "strategy": "ngram"},
    "csd": {"speculate": S, "strategy": "csd"},
}


def greedy_waves() -> list[tuple[int, list[Spec]]]:
    """10 requests of different prompt lengths and budgets, in two batches: the second is prefilled
    after 3 decode steps and then decoded together with the first (concatenation); short budgets
    end requests mid-batch (FilterBatch)."""
    specs = [Spec(p, max_new_tokens=n) for p, n in zip(PROMPTS[:10], [24, 12, 32, 16, 28, 20, 8, 24, 30, 18])]
    return [(0, specs[:6]), (3, specs[6:])]


@pytest.fixture(scope="module")
def greedy(shards):
    """name -> (outcomes, stats) of the same greedy workload on each configuration."""
    return {name: shards(name, **options).run(greedy_waves()) for name, options in CONFIGS.items()}


def test_info_reports_strategy(shards):
    info = shards("csd", **CONFIGS["csd"]).info
    assert info.speculate == S
    assert info.speculation_strategy == "csd"
    assert info.dtype == "torch.float32" and not info.requires_padding
    assert shards("stock", **CONFIGS["stock"]).info.speculation_strategy == ""


def test_workload_exercises_concatenate_and_filter(greedy):
    for name, (outcomes, stats) in greedy.items():
        assert stats.concatenations > 0, name
        assert stats.filters > 0, name
        assert [len(o.tokens) for o in outcomes] == [24, 12, 32, 16, 28, 20, 8, 24, 30, 18], name


@pytest.mark.parametrize("name", ["stock", "ngram", "csd"])
def test_greedy_identical_to_no_speculation(greedy, name):
    reference = [o.tokens for o in greedy["spec0"][0]]
    assert [o.tokens for o in greedy[name][0]] == reference


def test_strategy_faults_cost_speculation_never_a_request(shards, greedy):
    """A strategy that raises a torch error, proposes ids outside the vocabulary, too many ids or the wrong
    rows, and raises in filter (integration_tests/shard/faulty_strategy.py), inside the real shard: every
    request finishes identical to --speculate 0; each fault is logged once with its traceback through
    TGI's logger; after SPECULATION_MAX_FAULTS of them the strategy turns itself off and says so."""
    from integration_tests.shard.faulty_strategy import SCHEDULE

    client = shards("faulty", speculate=S, strategy="faulty",
                    extra_env={"TGI_CSD_TEST_STRATEGY": "faulty", "SPECULATION_MAX_FAULTS": "5"})
    outcomes, _ = client.run(greedy_waves())
    assert [o.tokens for o in outcomes] == [o.tokens for o in greedy["spec0"][0]]
    log = client.log_path.read_text(errors="replace")
    # Proposal steps 2-5 fault, then the first filter or step 9: the fifth fault turns the strategy off,
    # and the faults still scheduled after it never run.
    assert log.count("this step decodes without speculation") == 5, log[-3000:]
    assert log.count("Traceback") >= 5
    for kind in ("propose failed (RuntimeError", "outside the vocabulary", "more than speculate=4",
                 "rows for a batch of"):
        assert kind in log, kind
    assert log.count("turned off until the shard restarts") == 1
    assert len(SCHEDULE) > 5


def test_csd_identical_to_stock_ngram_strategy(greedy):
    assert [o.tokens for o in greedy["csd"][0]] == [o.tokens for o in greedy["ngram"][0]]


def test_greedy_snapshot(greedy, snapshot):
    assert {i: o.tokens for i, o in enumerate(greedy["spec0"][0])} == snapshot


def tokens_per_forward(outcomes) -> float:
    return sum(len(o.tokens) for o in outcomes) / sum(o.forwards for o in outcomes)


def test_csd_takes_more_than_one_token_per_target_forward(greedy):
    assert tokens_per_forward(greedy["spec0"][0]) == 1.0
    assert tokens_per_forward(greedy["csd"][0]) > 1.0
    # csd drafts at least as well as TGI's first-match n-gram on this workload
    assert tokens_per_forward(greedy["csd"][0]) >= tokens_per_forward(greedy["ngram"][0])


def test_ngram_strategy_matches_the_built_in_proposal(greedy):
    """Same drafts as TGI's own n-gram at batch size 1; in a batch TGI reads zero padding past the
    shorter rows, so the forward counts may differ slightly there, never the tokens."""
    stock, ngram = greedy["stock"][0], greedy["ngram"][0]
    assert abs(tokens_per_forward(stock) - tokens_per_forward(ngram)) < 0.25


def test_single_request_matches_stock_ngram_forward_for_forward(shards):
    spec = [(0, [Spec(PROMPTS[2], max_new_tokens=32)])]
    stock, _ = shards("stock", **CONFIGS["stock"]).run(spec)
    ngram, _ = shards("ngram", **CONFIGS["ngram"]).run(spec)
    assert stock[0].tokens == ngram[0].tokens
    assert stock[0].forwards == ngram[0].forwards


def test_concurrent_requests_alone_and_together_agree(shards):
    """Each request alone gives what it gave inside the mixed continuous batch."""
    client = shards("csd", **CONFIGS["csd"])
    together, _ = client.run(greedy_waves())
    for spec, mixed in zip([s for _, specs in greedy_waves() for s in specs][:4], together[:4]):
        alone, _ = client.run([(0, [spec])])
        assert alone[0].tokens == mixed.tokens


def test_seeded_sampling_is_reproducible(shards):
    client = shards("csd", **CONFIGS["csd"])
    specs = [Spec(PROMPTS[7], max_new_tokens=20, temperature=0.8, do_sample=True, seed=1234),
             Spec(PROMPTS[3], max_new_tokens=20, temperature=0.8, do_sample=True, seed=99, top_k=40)]
    first, _ = client.run([(0, specs)])
    second, _ = client.run([(0, specs)])
    assert [o.tokens for o in first] == [o.tokens for o in second]
    assert first[0].tokens != first[1].tokens


def test_env_only_route(shards):
    """An unpatched launcher passes only its environment: SPECULATION_STRATEGY selects the strategy."""
    client = shards("csd-env", speculate=S, strategy="csd", env_only=True)
    assert client.info.speculation_strategy == "csd"
    outcomes, _ = client.run([(0, [Spec(PROMPTS[0], max_new_tokens=16)])])
    reference, _ = shards("spec0", **CONFIGS["spec0"]).run([(0, [Spec(PROMPTS[0], max_new_tokens=16)])])
    assert outcomes[0].tokens == reference[0].tokens


def test_bf16_records_what_changes(shards):
    """TGI's CPU default dtype. Verification is still exact (the emitted token is the target's own
    choice at each position), but the verify forward runs B*(S+1) rows instead of B, so bf16 matmuls
    round differently and near-ties can flip: greedy outputs may differ from `--speculate 0`.
    The assertions that must hold: same lengths, a common prefix, and the strategy's run is itself
    deterministic."""
    spec = [(0, [Spec(PROMPTS[i], max_new_tokens=16) for i in (0, 1)])]
    plain, _ = shards("spec0-bf16", dtype="bfloat16").run(spec)
    csd_a, _ = shards("csd-bf16", speculate=S, strategy="csd", dtype="bfloat16").run(spec)
    csd_b, _ = shards("csd-bf16", speculate=S, strategy="csd", dtype="bfloat16").run(spec)
    assert [o.tokens for o in csd_a] == [o.tokens for o in csd_b]
    assert [len(o.tokens) for o in csd_a] == [len(o.tokens) for o in plain]
    for a, b in zip(csd_a, plain):
        assert a.tokens[0] == b.tokens[0]  # the prefill forward is the same computation
        same = next((i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y), len(a.tokens))
        print(f"bf16: csd and speculate 0 agree on the first {same}/{len(a.tokens)} tokens")


def test_flashinfer_ragged_table_covers_every_verify_row(shard_env):
    """flashinfer, TGI's default GPU attention, is handed a ragged block table: `shard/ragged_check.py`
    computes, in TGI's own code on CPU, which KV slots each query row of a verify forward (3 requests,
    4 ids each) would read. Upstream builds the table from the 3 request lengths, so rows read past its
    end (huggingface/text-generation-inference#2997); the patched server's covers all 12 rows exactly,
    and without speculation it is upstream's table."""
    venv = shard_env["venv"]
    out = subprocess.run([str(venv / "bin" / "python"), str(build.HERE / "ragged_check.py")],
                         env=build.environment(venv), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nflashinfer ragged table, {report['rows']} verify rows: {report}")
    assert report["upstream"]["rows_past_the_end"] > 0  # the upstream bug, shown
    assert report["patched"]["correct_rows"] == report["rows"]
    assert report["patched"]["table_entries"] == report["patched"]["needed_entries"]
    assert report["plain_unchanged"]
