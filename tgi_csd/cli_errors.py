"""How every `tgi-csd` command reports bad input: the `ConfigError`'s one line on stderr, exit status 2."""

from __future__ import annotations

from typing import NoReturn

import typer

from tgi_csd.errors import ConfigError


def fail(error: ConfigError) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)
