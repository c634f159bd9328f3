"""Where a benchmark ran: library versions, threads, CPU; recorded with every result."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _kernel_widths() -> str:
    """The kernel's vector width per row count (`small_rows.lane_plan`, measured or `$TGI_CSD_KERNEL_LANES`)."""
    from tgi_csd import small_rows

    return small_rows.describe(small_rows.lane_plan())


def environment(engine_cpu_kernel: bool) -> dict:
    """Versions, threads and CPU; `engine_cpu_kernel`: whether our engine's forwards of 2-32 tokens ran
    `tgi_csd.small_rows` (transformers methods always run torch's linear), and then its vector widths."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "engine_linear": "tgi-csd CPU kernel for 2-32 token forwards" if engine_cpu_kernel else "torch",
        "engine_kernel_widths": _kernel_widths() if engine_cpu_kernel else None,
        "transformers": transformers.__version__,
        "tgi_csd": _version("tgi-csd"),
        "git": _git_commit(),
    }
