"""Wall time for the cost models: model forwards, drafter calls, the shard's step time.

Everything that learns from timings reads `now()`; tests install a deterministic source with `use(...)`,
so that timings, and the decisions the adaptive controller makes from them, do not depend on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_source: Callable[[], float] = time.perf_counter


def now() -> float:
    """Seconds from an arbitrary origin (monotonic)."""
    return _source()


@contextmanager
def use(source: Callable[[], float]) -> Iterator[None]:
    """Read time from `source` inside the block."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
