"""`tgi-csd bench`: a smoke run on a tiny model (2 prompts, 8 tokens) writes every file, every method's
outputs equal `ar`'s (`nospec` and `csd-adaptive` at batch sizes 1 and 4 too), a wrong output is flagged
loudly, and bad input exits 2 naming the option."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from helpers import TINY_CHAT_TEMPLATE, tiny_cascade_config, tiny_llama
from tgi_csd.bench.cost import compute_params, relative_costs, tokens_per_cost
from tgi_csd.bench.methods import HFGenerate, Method, Run, Session, _EngineSession
from tgi_csd.bench.report import Results, markdown
from tgi_csd.bench.runner import Measurement, run_interleaved
from tgi_csd.bench.summary import Row, Skipped, summarize
from tgi_csd.cli import app
from tgi_csd.models import cut_from_target
from tgi_csd.reference import ReferenceOutput, compare

runner = CliRunner()
ALL_METHODS = "ar,hf-assisted,hf-prompt-lookup,ngram,sd,mag,csd,csd-lenient"
PLOTS = ["speedup.png", "tokens_per_forward.png", "batch.png"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny target with a 2-layer cut drafter and MaG, and two repetitive prompts (MaG gets accepted)."""
    folder = tmp_path_factory.mktemp("bench")
    config = tiny_cascade_config(folder)
    prompts = folder / "prompts.txt"
    prompts.write_text("w3 w4 w5 w3 w4 w5 w6\n\nw7 w8 w9 w10 w7 w8\nw20 w21\n")
    return folder, config, prompts


def bench(config, prompts, out, *extra):
    return runner.invoke(app, ["bench", "--config", str(config), "--prompts", str(prompts), "--limit", "2",
                               "--max-new-tokens", "8", "--repeats", "1", "--out", str(out), *extra])


def test_smoke_run_writes_results_and_every_output_equals_ar(setup):
    folder, config, prompts = setup
    out = folder / "out"
    result = bench(config, prompts, out, "--methods", ALL_METHODS, "--batch-sizes", "1,2")
    assert result.exit_code == 0, result.output
    for name in ["results.json", "results.md", *PLOTS]:
        assert (out / name).stat().st_size > 0, name
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    expected_keys = {"torch", "transformers", "torch_threads", "cpu_model", "cpu_capability", "python"}
    assert expected_keys <= set(data["environment"])
    kernel_here = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")  # the config's `cpu_kernel: auto`
    assert data["environment"]["engine_linear"] == ("tgi-csd CPU kernel for 2-32 token forwards" if kernel_here
                                                    else "torch")
    widths = data["environment"]["engine_kernel_widths"]
    plan = r"(8|16) lanes for 1-\d+ rows(, (8|16) for \d+-32 rows)?"  # small_rows.describe
    assert re.fullmatch(plan, widths) if kernel_here else widths is None
    assert data["settings"]["prompts"] == 2 and data["settings"]["max_new_tokens"] == 8
    assert data["costs"]["target_params"] > 0 and 0 < data["costs"]["drafters"]["half"] < 1
    assert data["mismatches"] == 0

    rows = {(r["method"], r["batch_size"]): r for r in data["rows"]}
    assert set(rows) == {(m, b) for m in ALL_METHODS.split(",") for b in (1, 2)}
    for method in ("hf-assisted", "hf-prompt-lookup"):
        assert not rows[(method, 2)]["applicable"] and "batch size 1" in rows[(method, 2)]["reason"]
    reference = rows[("ar", 1)]["outputs"]
    assert len(reference) == 2 and all(len(o) >= 1 for o in reference)
    measured = [r for r in data["rows"] if r["applicable"]]
    assert len(measured) == 14
    for row in measured:
        where = f"{row['method']} at batch {row['batch_size']}"
        assert row["outputs"] == reference, f"{where}: outputs differ from ar"
        assert row["agreement"] == {"identical": 2, "near-tie": 0, "MISMATCH": 0}, where
        assert row["tokens"] == sum(map(len, reference)), where
        assert row["tokens_per_s"]["min"] <= row["tokens_per_s"]["median"] <= row["tokens_per_s"]["max"], where
        assert row["target_forwards"] >= 1 and row["tokens_per_target_forward"] >= 1.0, where
        assert 0.0 <= row["drafter_share"] < 1.0 and row["swi"] > 0, where
    assert rows[("ar", 1)]["swi"] == 1.0 and rows[("ar", 1)]["speedup"]["median"] == 1.0
    assert rows[("mag", 1)]["tokens_per_target_forward"] > 1.0, "no MaG draft accepted: acceptance is untested"
    assert rows[("mag", 1)]["swi"] == rows[("mag", 1)]["tokens_per_target_forward"]  # MaG costs nothing
    assert rows[("sd", 1)]["drafter_forwards"]["half"] > 0 and rows[("hf-assisted", 1)]["drafter_forwards"]["half"] > 0
    assert "mag->target" in rows[("csd", 1)]["drafts"]
    assert sum(r["best"] for r in measured if r["batch_size"] == 1) == 1
    assert set(data["fastest"]) == {"1", "2"}
    assert set(data["headline"]) == {"csd_vs_ar", "best_hf", "csd_vs_best_hf", "csd_vs_sd"}

    text = (out / "results.md").read_text()
    assert "| csd-lenient | 1 |" in text and "MISMATCH:" not in text and "identical 2/2" in text


def test_nospec_and_csd_adaptive_at_batch_1_and_4(setup):
    """`csd-adaptive` steers with the config's own `adaptive` section (eager probing from a one-token warmup
    draft, uncalibrated, so both levels draft and speculation goes off within 8 tokens) and records off steps
    and the final k; `csd` stays static at the bounds; every row gets its tok/s ratio to `nospec`, which is
    the engine without drafters."""
    folder, _, prompts = setup
    config = folder / "adaptive.yaml"
    config.write_text(yaml.safe_dump({
        "target": {"model": str(folder / "tiny")},
        "drafters": [{"type": "model", "name": "half", "from_target_layers": 2}, {"type": "mag", "bigram": None}],
        "k_matrix": [[2, 2], [0, 3]],
        "adaptive": {"warmup_steps": 0, "hold_steps": 1, "probe_every": 2, "probe_budget": 1.0, "calibrate": False},
    }))
    out = folder / "adaptive-out"
    result = bench(config, prompts, out, "--methods", "nospec,csd,csd-adaptive", "--batch-sizes", "1,4")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["mismatches"] == 0
    rows = {(r["method"], r["batch_size"]): r for r in data["rows"]}
    assert set(rows) == {(m, b) for m in ("ar", "nospec", "csd", "csd-adaptive") for b in (1, 4)}
    reference = rows[("ar", 1)]["outputs"]
    for (method, batch), row in rows.items():
        assert row["outputs"] == reference, f"{method} at batch {batch}"
        assert row["vs_nospec"]["min"] <= row["vs_nospec"]["median"] <= row["vs_nospec"]["max"]
    for batch in (1, 4):
        nospec, csd, adaptive = (rows[(m, batch)] for m in ("nospec", "csd", "csd-adaptive"))
        assert nospec["k"] == 0 and nospec["drafter_forwards"] == {} and nospec["drafts"] == {}
        assert nospec["vs_nospec"]["median"] == 1.0 and nospec["adaptive"] is None
        assert csd["k"] == 4 and csd["adaptive"] is None
        assert adaptive["k"] is None
        [engine] = adaptive["adaptive"]  # one repeat
        assert 0 < engine["speculation_off_steps"] < engine["steps"]
        assert set(engine["current_k"]) == {"target", "half"}
        assert set(engine["current_k"]["target"]) == {"half", "mag"}
        assert all(0 <= k <= 2 for k in engine["current_k"]["target"].values())
        assert 0 <= engine["current_k"]["half"]["mag"] <= 3
    assert rows[("nospec", 1)]["tokens_per_target_forward"] == 1.0
    assert data["settings"]["cascade"]["adaptive"]["probe_every"] == 2  # the config as written
    headline = data["headline"]
    assert set(headline["csd_adaptive_vs_nospec"]) == {"1", "4"}
    assert headline["csd_adaptive_vs_nospec_min"] == min(headline["csd_adaptive_vs_nospec"].values())
    assert headline["best_static"] == "csd" and headline["csd_adaptive_vs_best_static"] > 0

    text = (out / "results.md").read_text()
    assert "| vs nospec (min–max) |" in text
    assert re.search(r"\| csd-adaptive( ★)? \| 1 \| adaptive \|", text), "★ marks the fastest, whichever it is"
    assert "## Adaptive cascade" in text and "target: half=" in text
    assert "csd-adaptive vs nospec: batch 1 " in text and "the best static k-matrix (csd)" in text


def test_a_wrong_output_is_marked_loudly_and_exits_1(setup, monkeypatch):
    folder, config, prompts = setup
    honest = _EngineSession._generate

    def broken(self, chunk):
        outputs = honest(self, chunk)
        if not self.outputs:  # the first prompt's output
            outputs[0][-1] += 1
        return outputs

    monkeypatch.setattr(_EngineSession, "_generate", broken)
    out = folder / "broken"
    result = bench(config, prompts, out, "--methods", "ar,mag", "--batch-sizes", "1")
    assert result.exit_code == 1, result.output
    assert "MISMATCH" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["mismatches"] == 1
    mag = next(r for r in data["rows"] if r["method"] == "mag")
    assert mag["agreement"]["MISMATCH"] == 1 and not mag["best"]
    assert "**MISMATCH 1/2**" in (out / "results.md").read_text()


def test_batched_ar_pads_left_and_stops_each_row_at_its_eos():
    target = tiny_llama()
    prompts = [[3, 4, 5, 3, 4], [7, 8, 9, 10, 11, 12, 13], [20, 21]]
    free = HFGenerate("ar", SimpleNamespace(target=target, eos_token_id=None), 0)
    alone = free.run(prompts[:1], 1, 8).outputs[0]
    eos = next(t for i, t in enumerate(alone) if i >= 1 and t not in alone[:i])  # a token first emitted mid-output
    ar = HFGenerate("ar", SimpleNamespace(target=target, eos_token_id=eos), 0)
    one_by_one = ar.run(prompts, 1, 8)
    batched = ar.run(prompts, 2, 8)
    assert one_by_one.outputs[0] == alone[:alone.index(eos) + 1]
    assert batched.outputs == one_by_one.outputs
    assert batched.target_forwards < one_by_one.target_forwards


class _Fixed(Method):
    """A method that returns fixed outputs (summary and report logic without models)."""

    def __init__(self, name: str, k: int | None = 4) -> None:
        self.name, self.k = name, k

    def start(self, max_new_tokens):
        raise NotImplementedError


class _Recording(Method):
    """Echoes each prompt's first token, logging which method generated which batch."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.k, self.log = name, 0, log

    def start(self, max_new_tokens):
        return _RecordingSession(self, max_new_tokens)


class _RecordingSession(Session):
    def __init__(self, method: _Recording, max_new_tokens: int) -> None:
        super().__init__(max_new_tokens)
        self.method = method

    def _generate(self, chunk):
        self.method.log.append((self.method.name, [p[0] for p in chunk]))
        return [[p[0]] for p in chunk]

    def finish(self) -> Run:
        return Run(self.outputs, self.seconds, len(self.outputs), 0.0, {}, 0.0)


def test_methods_take_turns_batch_by_batch_and_keep_prompt_order():
    log: list = []
    prompts = [[10], [11], [12], [13], [14]]
    refs = [ReferenceOutput([p[0]], gaps=[1.0]) for p in prompts]
    measurements = run_interleaved([_Recording("a", log), _Recording("b", log)], prompts, refs, [2], 2, 4, 1e-3,
                                   Console(quiet=True))
    warmup, timed = log[:2], log[2:]
    assert warmup == [("a", [10]), ("b", [10])]
    # repeat 1: a b | b a | a b; repeat 2 starts one further round
    assert [name for name, _ in timed] == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert [batch for name, batch in timed if name == "a"] == [[10, 11], [12, 13], [14]] * 2
    assert [(m.method, m.repeat) for m in measurements] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    for m in measurements:
        assert m.run.outputs == [[p[0]] for p in prompts]
        assert all(agreement.value == "identical" for agreement, _ in m.checks)


def _measurement(name: str, outputs: list[int], seconds: float, reference: ReferenceOutput) -> Measurement:
    run = Run([outputs], seconds, target_forwards=len(outputs), target_seconds=seconds / 2,
              drafter_forwards={}, drafter_seconds=0.0)
    return Measurement(name, 1, 0, run, [compare(outputs, reference, 1e-3)])


def test_summary_speedup_near_ties_and_best_exclude_mismatches():
    reference = ReferenceOutput([5, 6, 7, 8], gaps=[3.0, 1e-5, 3.0, 3.0])
    entries = [_Fixed("ar", 0), _Fixed("near"), _Fixed("wrong"), _Fixed("slow")]
    measurements = [
        _measurement("ar", [5, 6, 7, 8], 2.0, reference),
        _measurement("near", [5, 9, 7, 8], 1.0, reference),  # differs at a near-tie: allowed
        _measurement("wrong", [5, 6, 9, 8], 0.1, reference),  # fastest, but wrong
        _measurement("slow", [5, 6, 7, 8], 4.0, reference),
    ]
    rows = summarize(entries, measurements, [1], {})
    by_name = {r.method: r for r in rows}
    assert by_name["near"].speedup.median == pytest.approx(2.0)
    assert by_name["slow"].speedup.median == pytest.approx(0.5)
    assert by_name["near"].agreement == {"identical": 0, "near-tie": 1, "MISMATCH": 0}
    assert by_name["wrong"].differences == [{"prompt": 0, "agreement": "MISMATCH", "position": 2}]
    assert [r.method for r in rows if isinstance(r, Row) and r.best] == ["near"]
    results = Results({"prompts": 1, "prompt_source": "x", "max_new_tokens": 4, "repeats": 1, "config": "c"}, {},
                      {}, [*rows, Skipped("sd", 1, "no model drafter in the config")], {})
    text = markdown(results)
    assert "**MISMATCH: 1 outputs differ" in text and "**MISMATCH 1/1**" in text
    assert "near-tie 1" in text and "n/a: no model drafter in the config" in text


def test_cost_model_counts_a_cut_drafts_layers_and_head():
    target = tiny_llama(layers=4)
    draft = cut_from_target(target, 2)
    per_layer = sum(p.numel() for p in target.model.layers[0].parameters())
    fixed = target.lm_head.weight.numel() + target.model.norm.weight.numel()  # untied: the embedding is a lookup
    assert compute_params(target) == 4 * per_layer + fixed
    assert relative_costs(target, {"d": draft})["d"] == pytest.approx((2 * per_layer + fixed) / (4 * per_layer + fixed))
    assert tokens_per_cost(10, 10, {}, {}) == 1.0  # plain decoding
    assert tokens_per_cost(10, 4, {"d": 6}, {"d": 0.5}) == pytest.approx(10 / 7)


def test_k_sweep_benchmarks_each_valid_point_and_marks_the_best(setup):
    folder, config, prompts = setup
    grid = folder / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": [[[1, 2], [0, 3]], [0, [0, 2]]]}))
    out = folder / "sweep"
    result = bench(config, prompts, out, "--k-sweep", str(grid), "--batch-sizes", "1")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    # [1,0]/[0,0] and [2,0]/[0,0] leave MaG unused: skipped
    assert data["settings"]["k_sweep"] == {"grid": str(grid), "points": 6, "skipped": 2}
    assert [r["method"] for r in data["rows"]] == ["ar", "csd[1,0/2]", "csd[1,3/0]", "csd[1,3/2]", "csd[2,0/2]",
                                                   "csd[2,3/0]", "csd[2,3/2]"]
    [best] = [r["method"] for r in data["rows"] if r["best"]]
    assert data["fastest"] == {"1": best}
    assert f"Fastest exact: batch 1: {best} (" in (out / "results.md").read_text()
    assert all(r["outputs"] == data["rows"][0]["outputs"] for r in data["rows"])
    assert all((out / name).is_file() for name in PLOTS)


def test_k_sweep_runs_named_methods_next_to_the_static_points(setup):
    """With --methods, a k-sweep also runs those methods: csd-adaptive against the best static point."""
    folder, config, prompts = setup
    grid = folder / "grid-small.yaml"
    grid.write_text(yaml.safe_dump({"grid": [[[1, 2], 2], [0, 3]]}))
    out = folder / "sweep-adaptive"
    result = bench(config, prompts, out, "--k-sweep", str(grid), "--methods", "nospec,csd-adaptive",
                   "--batch-sizes", "1")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["ar", "nospec", "csd-adaptive", "csd[1,2/3]", "csd[2,2/3]"]
    assert data["mismatches"] == 0
    static = {r["method"]: r["speedup"]["median"] for r in data["rows"] if r["method"].startswith("csd[")}
    assert data["headline"]["best_static"] == max(static, key=static.get)
    assert data["headline"]["csd_adaptive_vs_best_static"] == pytest.approx(
        next(r["speedup"]["median"] for r in data["rows"] if r["method"] == "csd-adaptive") / max(static.values()))


def test_chat_prompts_go_through_the_template_and_the_results_say_so(tmp_path):
    """`messages` records always take the target's chat template, text prompts with `--chat`; the output is
    the continuation of the templated prompt (so it equals the target's on those ids), and results.json records
    which prompts were text and which chats. Without a template `--chat` is refused, naming the option."""
    config = tiny_cascade_config(tmp_path, chat_template=TINY_CHAT_TEMPLATE)
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "w3 w4 w3 w4"}]}) + "\n"
                       + json.dumps({"prompt": "w7 w8 w7"}) + "\n")
    runs = {}
    for flag in ([], ["--chat"]):
        out = tmp_path / f"out{len(flag)}"
        result = bench(config, prompts, out, "--methods", "csd", "--batch-sizes", "1", *flag)
        assert result.exit_code == 0, result.output
        runs[bool(flag)] = json.loads((out / "results.json").read_text())
    for chat, data in runs.items():
        assert data["mismatches"] == 0
        assert {k: data["settings"][k] for k in ("chat_template", "text_prompts", "chat_prompts")} == {
            "chat_template": True, "text_prompts": 1, "chat_prompts": 1}
        assert data["settings"]["chat"] is chat
    assert "from " + str(prompts) + " in the target's chat template," in (tmp_path / "out1" / "results.md").read_text()
    assert "(1 chats in the target's chat template, 1 texts raw)" in (tmp_path / "out0" / "results.md").read_text()
    ar = {chat: next(r for r in data["rows"] if r["method"] == "ar")["outputs"] for chat, data in runs.items()}
    assert ar[True][0] == ar[False][0] and ar[True][1] != ar[False][1], "only the text prompt's ids change"

    plain = tiny_cascade_config(tmp_path / "plain")
    result = bench(plain, prompts, tmp_path / "o", "--methods", "csd", "--batch-sizes", "1")
    assert result.exit_code == 2 and "error: --chat: the model's tokenizer has no chat template" in result.output


def test_bad_inputs_exit_2_naming_the_option(setup, tmp_path):
    _, config, prompts = setup
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    bad_grid = tmp_path / "grid.yaml"
    bad_grid.write_text("grid: [[1, 2]]\n")
    cases = [
        (["--prompts", str(tmp_path / "missing.txt")], "--prompts: cannot read"),
        (["--prompts", str(empty)], "--prompts:"),
        (["--methods", "ar,medusa"], "--methods: unknown method 'medusa'"),
        (["--limit", "0"], "--limit:"),
        (["--max-new-tokens", "0"], "--max-new-tokens:"),
        (["--repeats", "0"], "--repeats:"),
        (["--batch-sizes", "1,0"], "--batch-sizes:"),
        (["--k", "sd"], "--k:"),
        (["--k", "csd=3"], "--k:"),
        (["--k-sweep", str(bad_grid)], "--k-sweep:"),
        (["--k-sweep", str(bad_grid), "--methods", "nospec,nope"], "--methods: unknown method 'nope'"),
        (["--single-drafter", "nope"], "--single-drafter: no model drafter 'nope'"),
    ]
    for args, message in cases:
        base = ["bench", "--config", str(config), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
        result = runner.invoke(app, base + args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {message}" in result.output, (args, result.output)
