"""The CPU small-rows linear kernel: equal to torch's linear up to float32 rounding, independent of the
other rows, used only where `SmallRowsLinear` says, chosen as config `cpu_kernel` says."""

import logging

import pytest
import torch
import torch.nn.functional as F

from helpers import build_engine
from tgi_csd import small_rows
from tgi_csd.adapters import ReducedHead
from tgi_csd.engine import Request
from tgi_csd.errors import ConfigError
from tgi_csd.reference import Agreement, compare, reference_generate
from tgi_csd.runner import ModelRunner
from tgi_csd.small_rows import SmallRowsLinear, resolve
from tgi_csd.tokens import TokenSeq

if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
    pytest.skip("the kernel needs a CPU with AVX2/FMA", allow_module_level=True)


@pytest.fixture(scope="module")
def kernel():
    return small_rows.load_kernel().small_rows_linear


#: the vector widths (floats) this CPU runs: AVX2's 8, and AVX-512's 16 where it has them
LANES = sorted({8, small_rows.load_kernel().widest_lanes()})


@pytest.fixture(params=LANES, ids=lambda lanes: f"lanes{lanes}")
def lanes(request):
    return request.param


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 13, 32])
@pytest.mark.parametrize(("out_features", "in_features"), [(192, 576), (577, 64), (1, 8), (4, 1536), (9, 24)])
def test_equals_torch_linear_up_to_rounding(kernel, lanes, rows, out_features, in_features):
    generator = torch.Generator().manual_seed(rows * out_features)
    x = torch.randn(rows, in_features, generator=generator)
    w = torch.randn(out_features, in_features, generator=generator)
    bias = torch.randn(out_features, generator=generator)
    for b in (None, bias):
        expected = F.linear(x.double(), w.double(), None if b is None else b.double())
        got = kernel(x, w, b, lanes)
        # Sums of `in_features` products: float32 rounding grows with the length and the magnitudes.
        scale = (x.abs().double() @ w.abs().double().T).max()
        assert (got.double() - expected).abs().max() <= 1e-6 * scale
        assert (F.linear(x, w, b).double() - expected).abs().max() <= 1e-6 * scale  # torch, for comparison


def test_a_rows_result_does_not_depend_on_the_other_rows(kernel, lanes):
    """Every output is one fixed sequence of fused multiply-adds over its row and weight row, whatever
    tile the row falls in, so batching and draft width never change a row's result."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(13, 584, generator=generator)  # 584 = 36 * 16 + 8: AVX-512's half-vector tail too
    w = torch.randn(101, 584, generator=generator)
    together = kernel(x, w, None, lanes)
    for r in range(13):
        assert torch.equal(kernel(x[r : r + 1].clone(), w, None, lanes)[0], together[r])
        assert torch.equal(kernel(x[r : r + 3].clone(), w, None, lanes)[0], together[r])


def test_a_rows_result_does_not_depend_on_the_weight_rows_beside_it(kernel, lanes):
    """Weight rows are summed in blocks and one by one at the end; each sum is added up in the same order."""
    generator = torch.Generator().manual_seed(3)
    x, w = torch.randn(5, 576, generator=generator), torch.randn(7, 576, generator=generator)
    order = torch.randperm(7, generator=generator)
    assert torch.equal(kernel(x, w[order].contiguous(), None, lanes), kernel(x, w, None, lanes)[:, order])


def test_the_default_width_is_the_widest_the_cpu_has(kernel):
    generator = torch.Generator().manual_seed(2)
    x, w = torch.randn(5, 576, generator=generator), torch.randn(64, 576, generator=generator)
    assert torch.equal(kernel(x, w, None), kernel(x, w, None, max(LANES)))


def test_the_wider_lanes_start_at_the_row_count_that_costs_least_over_the_probes():
    seconds = {1: {8: 1.0, 16: 1.2}, 4: {8: 1.0, 16: 1.2}, 8: {8: 1.01, 16: 1.0}, 16: {8: 1.0, 16: 1.1},
               24: {8: 1.3, 16: 1.0}, 32: {8: 1.5, 16: 1.0}}  # 8 rows: noise in favour of 16
    assert small_rows.choose_lanes(seconds) == (8,) * 23 + (16,) * (small_rows.MAX_ROWS - 23)
    assert small_rows.choose_lanes({1: {8: 1.1, 16: 1.0}, 32: {8: 2.0, 16: 1.0}}) == (16,) * small_rows.MAX_ROWS
    assert small_rows.choose_lanes({1: {8: 1.0, 16: 1.1}, 32: {8: 1.0, 16: 1.2}}) == (8,) * small_rows.MAX_ROWS


@pytest.fixture
def fresh_plan():
    small_rows.lane_plan.cache_clear()
    yield small_rows.lane_plan
    small_rows.lane_plan.cache_clear()


def test_the_measured_plan_gives_a_width_the_cpu_runs_for_every_row_count(fresh_plan, monkeypatch):
    monkeypatch.delenv(small_rows.LANES_ENV, raising=False)
    plan = fresh_plan()
    assert len(plan) == small_rows.MAX_ROWS and set(plan) <= set(LANES)


def test_the_environment_forces_a_width_and_a_bad_one_names_the_fix(fresh_plan, monkeypatch):
    monkeypatch.setenv(small_rows.LANES_ENV, "8")
    assert fresh_plan() == (8,) * small_rows.MAX_ROWS
    assert SmallRowsLinear().lanes == (8,) * small_rows.MAX_ROWS
    fresh_plan.cache_clear()
    monkeypatch.setenv(small_rows.LANES_ENV, "32")
    with pytest.raises(ConfigError, match=r"TGI_CSD_KERNEL_LANES='32'.*8 \(AVX2\) or 16"):
        fresh_plan()


def test_a_plan_reads_as_widths_over_row_spans():
    top = small_rows.MAX_ROWS
    assert small_rows.describe((8,) * 15 + (16,) * (top - 15)) == f"8 lanes for 1-15 rows, 16 for 16-{top} rows"
    assert small_rows.describe((16,) * top) == f"16 lanes for 1-{top} rows"


def test_a_mode_runs_the_planned_width_for_each_row_count(monkeypatch):
    mode = SmallRowsLinear(min_rows=1)
    mode.lanes = (8, 16, 8) + (16,) * (small_rows.MAX_ROWS - 3)
    widths = []
    monkeypatch.setattr(mode, "kernel", lambda x, w, b, lanes: widths.append(lanes) or F.linear(x, w, b))
    layer = torch.nn.Linear(16, 8).requires_grad_(False)
    with mode:
        for rows in (1, 2, 3, 40):
            small_rows.linear(torch.randn(rows, 16), layer.weight)
    mode.max_rows = 64
    with mode:
        small_rows.linear(torch.randn(40, 16), layer.weight)
    assert widths == [8, 16, 8, 16]


def test_threads_split_weights_not_sums(kernel, lanes):
    generator = torch.Generator().manual_seed(1)
    x, w = torch.randn(6, 576, generator=generator), torch.randn(1536, 576, generator=generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel(x, w, None, lanes)
        torch.set_num_threads(2)
        two = kernel(x, w, None, lanes)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_mode_routes_only_small_float32_inference_linears_of_installed_models(monkeypatch):
    mode = SmallRowsLinear()
    calls = []
    kernel = mode.kernel
    monkeypatch.setattr(mode, "kernel", lambda x, w, b, lanes: calls.append(tuple(x.shape)) or kernel(x, w, b, lanes))
    model = torch.nn.ModuleDict({"wide": torch.nn.Linear(16, 24), "odd": torch.nn.Linear(12, 24),
                                 "float64": torch.nn.Linear(16, 24).double()}).requires_grad_(False)
    graded = torch.nn.Linear(16, 24)
    outside = torch.nn.Linear(16, 24).requires_grad_(False)  # never installed
    mode.install(model)
    mode.install(graded)
    wide = model["wide"]
    assert isinstance(wide, torch.nn.Linear)
    wide(torch.randn(2, 16))  # no mode active: torch
    with mode:
        shapes = [tuple(wide(x).shape) for x in (torch.randn(2, 16), torch.randn(1, 5, 16), torch.randn(4, 8, 16))]
        wide(torch.randn(1, 16))  # one row
        wide(torch.randn(33, 16))  # past max_rows
        model["odd"](torch.randn(3, 12))  # width not a multiple of 8
        model["float64"](torch.randn(3, 16).double())
        outside(torch.randn(3, 16))
        assert graded(torch.randn(3, 16)).requires_grad  # autograd keeps torch's path
        graded.requires_grad_(False)
        expected = F.linear(x := torch.randn(3, 16), graded.weight, graded.bias)
        got = graded(x)
    assert calls == [(2, 16), (5, 16), (32, 16), (3, 16)]
    assert shapes == [(2, 24), (1, 5, 24), (4, 8, 24)]
    assert torch.allclose(got, expected, atol=1e-5)


def test_a_reduced_head_takes_the_kernel_inside_a_mode(monkeypatch):
    """A drafter's reduced head is not an `nn.Linear`; it asks the active mode through `small_rows.linear`."""
    head = ReducedHead(torch.nn.Linear(16, 40, bias=False), torch.tensor([1, 5, 7]))
    mode = SmallRowsLinear(min_rows=1)
    calls = []
    kernel = mode.kernel
    monkeypatch.setattr(mode, "kernel", lambda x, w, b, lanes: calls.append(tuple(x.shape)) or kernel(x, w, b, lanes))
    hidden = torch.randn(1, 2, 16)
    with torch.inference_mode():
        expected = head(hidden)  # no mode active: torch
        with mode:
            got = head(hidden)
    assert calls == [(2, 16)]
    assert torch.allclose(got[..., [1, 5, 7]], expected[..., [1, 5, 7]], atol=1e-5)
    assert torch.equal(got.isinf(), expected.isinf()) and int(got.isinf().sum()) == 2 * 37


@pytest.mark.parametrize("layout", ["mag", "csd"])
def test_engine_with_the_kernel_equals_target_alone(target, layout, one_thread):
    """Greedy with `cpu_kernel: on` in every runner: the target alone's tokens, a near-tie the only
    accepted difference."""
    engine = build_engine(target, layout)
    for runner in [engine.target, *(d.runner for d in engine.drafters if hasattr(d, "runner"))]:
        runner.linear_mode = resolve("on", runner.model.device, runner.model.dtype,
                                     min_rows=2 if runner is engine.target else 1)
        runner.linear_mode.install(runner.model)
    prompts = [[5, 9, 3, 5, 9, 3, 5, 9], [1, 2, 3, 4, 5, 6, 7], [7, 7, 8, 7, 7, 8, 7]]
    near_ties = 0
    for prompt in prompts:
        result = engine.generate([Request(prompt_ids=prompt, max_new_tokens=24)])[0]
        ref = reference_generate(target, prompt, 24, None)
        agreement, position = compare(result.token_ids, ref, 1e-4)
        assert agreement is not Agreement.MISMATCH, f"{layout}: prompt {prompt} differs at {position}"
        near_ties += agreement is Agreement.NEAR_TIE
    assert near_ties <= 1
    assert engine.report()["tokens_per_target_forward"] > 1.0


def test_one_token_forwards_take_the_kernel_in_drafters_only(target, monkeypatch):
    """The target's one-token forwards are torch's, bit for bit (a step without a draft is the target alone's);
    a drafter's go through the kernel."""
    prompt = TokenSeq([5, 9, 3])

    def one_token_forwards(runner: ModelRunner) -> torch.Tensor:
        runner.add_rows(1)
        return torch.cat([runner.forward([0], [prompt.prefix(n)], [1]) for n in (1, 2, 3)])

    expected = one_token_forwards(ModelRunner(target, "plain", "off"))
    for drafts_only in (False, True):
        runner = ModelRunner(target, "runner", "on", drafts_only=drafts_only)
        calls = []
        monkeypatch.setattr(runner.linear_mode, "kernel",
                            lambda x, w, b, lanes, kernel=runner.linear_mode.kernel, calls=calls:
                            calls.append(x.shape) or kernel(x, w, b, lanes))
        got = one_token_forwards(runner)
        assert bool(calls) == drafts_only
        if not drafts_only:
            assert torch.equal(got, expected)
        else:
            assert torch.allclose(got, expected, atol=1e-4)  # float32 rounding only


def test_setting_off_auto_on():
    cpu = torch.device("cpu")
    assert resolve("off", cpu, torch.float32) is None
    assert isinstance(resolve("auto", cpu, torch.float32), SmallRowsLinear)
    assert resolve("auto", cpu, torch.bfloat16) is None
    with pytest.raises(ConfigError, match=r"cpu_kernel: 'on'.*float32 models on the CPU.*'auto' or 'off'"):
        resolve("on", cpu, torch.bfloat16)
    with pytest.raises(ConfigError, match="cpu_kernel"):
        resolve("on", torch.device("cuda"), torch.float32)


def test_auto_falls_back_with_a_warning_where_it_cannot_build(monkeypatch, caplog):
    monkeypatch.setattr(small_rows, "_build", lambda: "building small_rows_linear.cpp failed (no g++)")
    with caplog.at_level(logging.WARNING, logger="tgi_csd.small_rows"):
        assert resolve("auto", torch.device("cpu"), torch.float32) is None
    assert "no g++" in caplog.text
    with pytest.raises(ConfigError, match=r"cpu_kernel: 'on', but the kernel cannot run: .*no g\+\+"):
        resolve("on", torch.device("cpu"), torch.float32)
