"""The exception types users see for bad input."""

import re
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """Bad user input: the message names the field and how to fix it."""


class RequestError(ValueError):
    """A request the engine refuses at `add_request`: the message names the field and how to fix it."""


@contextmanager
def reading(field: str, path: object, fix: str) -> Iterator[None]:
    """Turn any failure to read or parse `path` inside the block into one `ConfigError` naming the field,
    the file and the fix (a truncated or corrupt file must never surface as a library's raw exception)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines() or [""]
        reason = lines[0] if len(lines[0]) <= 160 else lines[0][:157] + "..."
        raise ConfigError(f"{field}: cannot read {path} ({type(error).__name__}: {reason}); {fix}") from None
