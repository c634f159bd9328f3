"""A float32 CPU linear for the few-token forwards of speculative decoding (`csrc/small_rows_linear.cpp`,
AVX2/FMA, or AVX-512 where the CPU has it and it is the faster).

On CPU, torch's BLAS makes a forward over 2-32 tokens cost about twice a one-token forward, so a
verify step must gain two tokens to pay. The kernel reads each weight once for all rows, keeping
such forwards near the one-token cost. It is built on first use with torch's C++ extension tools
(g++ and ninja) into the tgi-csd cache, once per machine and torch version.

Scope: only the `nn.Linear` layers of models passed to `SmallRowsLinear.install`, only inside `with
mode:`, only on float32 CPU tensors without autograd whose row count lies in `[min_rows, max_rows]`.
The target's one-row forwards keep torch's own path (`min_rows` 2), so a step with no draft computes
exactly what the target alone computes; a drafter's take the kernel too (`min_rows` 1: its tokens are
only proposals, and the kernel reads its weights faster). The layers ask the active mode themselves: a
`TorchFunctionMode` would see every torch call of a forward, 4-8 ms of Python dispatch a forward of
the default model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from tgi_csd.config import KernelSetting
from tgi_csd.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "small_rows_linear.cpp"
TILES = SOURCE.with_name("small_rows_tiles.inc")  # included by SOURCE


class KernelUnavailable(RuntimeError):
    """The kernel cannot run here; the message says why."""


def load_kernel() -> ModuleType:
    """The compiled extension, or `KernelUnavailable` with the reason (both found out once per process)."""
    built = _build()
    if isinstance(built, str):
        raise KernelUnavailable(built)
    return built


@cache
def _build() -> ModuleType | str:
    """The extension, built into the cache on first use; a string says why it cannot be."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"the CPU lacks AVX2/FMA (torch reports {capability})"
    from torch.utils import cpp_extension

    from tgi_csd.models import cache_dir, console

    # torch rebuilds when SOURCE changes but cannot see the file it includes: the folder names both.
    digest = hashlib.sha256(SOURCE.read_bytes() + TILES.read_bytes()).hexdigest()[:12]
    folder = cache_dir() / "kernels" / f"small_rows-torch{torch.__version__.replace('+', '-')}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join(filter(None, [_ninja_bin_dir(), path]))  # torch runs `ninja` from PATH
    try:
        with console().status(f"Loading the CPU verify kernel (built into {folder} on first use, about a minute)"):
            return cpp_extension.load("tgi_csd_small_rows", [str(SOURCE)], build_directory=str(folder),
                                      extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                                      extra_ldflags=["-fopenmp"])
    except Exception as error:  # a missing compiler or ninja shows up as any of several error types
        return f"building {SOURCE.name} failed ({type(error).__name__}: {error})"
    finally:
        os.environ["PATH"] = path


def _ninja_bin_dir() -> str | None:
    """The folder of the `ninja` binary from the PyPI package."""
    try:
        import ninja
    except ImportError:
        return None
    return getattr(ninja, "BIN_DIR", None)


def resolve(setting: KernelSetting, device: torch.device, dtype: torch.dtype,
            min_rows: int = 2) -> SmallRowsLinear | None:
    """The mode (from `min_rows` rows up) a model runner on `device`/`dtype` uses under config
    `cpu_kernel: setting`, or None.

    `auto`: the kernel for float32 CPU models when it builds (a warning says why when it does not),
    nothing elsewhere; `on`: a `ConfigError` wherever it cannot run; `off`: never.
    """
    if setting == "off":
        return None
    applies = device.type == "cpu" and dtype == torch.float32
    try:
        if not applies:
            raise KernelUnavailable(f"it serves float32 models on the CPU, not {dtype} on {device.type}")
        return SmallRowsLinear(min_rows)
    except KernelUnavailable as why:
        if setting == "on":
            raise ConfigError(f"cpu_kernel: 'on', but the kernel cannot run: {why}; use 'auto' or 'off'") from None
        if applies:
            log.warning("cpu_kernel: using torch's linear layers (%s)", why)
        return None


#: the most rows (tokens of a forward, leading dims flattened) the kernel takes by default
MAX_ROWS = 32

#: forces the kernel's vector width: 8 (AVX2) or 16 (AVX-512)
LANES_ENV = "TGI_CSD_KERNEL_LANES"

#: row counts `lane_plan` times
PROBE_ROWS = (1, 2, 4, 8, 12, 16, 24, 32)


@cache
def lane_plan() -> tuple[int, ...]:
    """The kernel's vector width for 1..`MAX_ROWS` rows (index: rows - 1), found once per process.

    `$TGI_CSD_KERNEL_LANES` (8 or 16) where set; 8 on a CPU without AVX-512; else whichever width
    passes faster over weights larger than the last-level cache at `PROBE_ROWS` (`choose_lanes`). The widths
    differ by CPU: on an Intel Xeon AVX-512 was the faster at every row count, on an AMD Zen 4 (which
    splits 512-bit operations in two) AVX2 up to 16 rows and AVX-512 above.
    """
    kernel = load_kernel()
    widest = kernel.widest_lanes()
    forced = os.environ.get(LANES_ENV)
    if forced:
        if forced not in ("8", "16") or int(forced) > widest:
            raise ConfigError(f"{LANES_ENV}={forced!r}: the kernel's vector width is 8 (AVX2) or 16 (AVX-512, "
                              f"which this CPU {'has' if widest == 16 else 'lacks'}); set one of those or unset it")
        return (int(forced),) * MAX_ROWS
    if widest == 8:
        return (8,) * MAX_ROWS
    plan = choose_lanes(_time_widths(kernel.small_rows_linear, (8, widest)))
    log.info("CPU verify kernel: %s", describe(plan))
    return plan


def describe(plan: tuple[int, ...]) -> str:
    """`plan` in words: each width with the row counts it serves, e.g. `8 lanes for 1-15 rows, 16 for 16-32 rows`."""
    spans = []
    for rows, lanes in enumerate(plan, start=1):
        if spans and spans[-1][0] == lanes:
            spans[-1][2] = rows
        else:
            spans.append([lanes, rows, rows])
    return ", ".join(f"{lanes}{' lanes' if i == 0 else ''} for {first}-{last} rows"
                     for i, (lanes, first, last) in enumerate(spans))


def choose_lanes(seconds: dict[int, dict[int, float]]) -> tuple[int, ...]:
    """Per row count 1..`MAX_ROWS`: the narrower width below one threshold, the wider from it on, the
    threshold (a probed row count, or none) the one with the least time over the probes of
    `seconds[probe][width]`, each probe's times relative to its fastest.

    One threshold because the wider vectors gain on compute, which grows with the rows; a single
    noisy probe cannot switch one row count alone.
    """
    probes = sorted(seconds)
    narrow, wide = min(seconds[probes[0]]), max(seconds[probes[0]])

    def cost(threshold: float) -> float:
        return sum(seconds[p][narrow if p < threshold else wide] / min(seconds[p].values()) for p in probes)

    threshold = min([*probes, MAX_ROWS + 1], key=cost)
    return tuple(narrow if rows < threshold else wide for rows in range(1, MAX_ROWS + 1))


def _time_widths(kernel: Callable[..., torch.Tensor], widths: tuple[int, ...],
                 repeats: int = 5) -> dict[int, dict[int, float]]:
    """Median seconds of one pass of `kernel` over 16 weights of the default model's MLP shape (56 MB, out
    of the last-level cache as a model's are), per probed row count and width, the widths interleaved."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.rand(1536, 576, generator=generator) for _ in range(16)]
    seconds = {}
    for rows in PROBE_ROWS:
        x = torch.rand(rows, 576, generator=generator)
        runs: dict[int, list[float]] = {width: [] for width in widths}
        for _ in range(repeats):
            for width in widths:
                start = time.perf_counter()
                for weight in weights:
                    kernel(x, weight, None, width)
                runs[width].append(time.perf_counter() - start)
        seconds[rows] = {width: statistics.median(times) for width, times in runs.items()}
    return seconds


class SmallRowsLinear:
    """Within `with mode:`, the linear layers of installed models run the kernel on 2-32 float32 rows
    (leading dims flattened).

    Invariant: each output element is the same sum of products as torch's, in another order, so
    outputs differ from torch's by float32 rounding only; calls outside the row range, other
    dtypes, other devices and anything needing gradients go to torch unchanged, as does every call
    outside the `with` block. The vector width per row count is `lane_plan()`'s.
    """

    def __init__(self, min_rows: int = 2, max_rows: int = MAX_ROWS) -> None:
        self.kernel = load_kernel().small_rows_linear
        self.lanes = lane_plan()
        self.min_rows = min_rows
        self.max_rows = max_rows
        self._tokens: list[Token] = []

    @staticmethod
    def install(model: nn.Module) -> None:
        """Make `model`'s plain `nn.Linear` layers `KernelLinear`s (the same layers while no mode is active)."""
        for module in model.modules():
            if type(module) is nn.Linear:
                module.__class__ = KernelLinear

    def __enter__(self) -> SmallRowsLinear:
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _ACTIVE.reset(self._tokens.pop())

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        """`x @ weight.T + bias` by the kernel, or None where torch must compute it."""
        if x.dim() == 0 or weight.dim() != 2 or not x.shape[-1] or x.shape[-1] % 8 or x.shape[-1] != weight.shape[1]:
            return None
        rows = x.numel() // x.shape[-1]
        if not (self.min_rows <= rows <= self.max_rows):
            return None
        if x.dtype != torch.float32 or weight.dtype != torch.float32 or not weight.is_contiguous():
            return None
        if x.device.type != "cpu" or weight.device.type != "cpu":
            return None
        if bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"):
            return None
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return None
        lanes = self.lanes[min(rows, len(self.lanes)) - 1]
        out = self.kernel(x.reshape(rows, x.shape[-1]).contiguous(), weight, bias, lanes)
        return out.view(*x.shape[:-1], weight.shape[0])


_ACTIVE: ContextVar[SmallRowsLinear | None] = ContextVar("tgi_csd_small_rows", default=None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, by the kernel where the active `SmallRowsLinear` (if any) takes it: for layers that are not
    `nn.Linear` (a drafter's reduced head)."""
    mode = _ACTIVE.get()
    out = None if mode is None else mode.linear(x, weight, bias)
    return F.linear(x, weight, bias) if out is None else out


class KernelLinear(nn.Linear):
    """An `nn.Linear` that lets the active `SmallRowsLinear` compute it; with none active, `nn.Linear` exactly."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)
