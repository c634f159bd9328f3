"""Launchers for the live-TGI suite, chosen by environment (each skipped with its reason when unavailable):

* live — `TGI_SRC` (or `TGI_CSD_SHARD_VENV`) and the patched binaries (`make tgi`, or `TGI_CSD_TGI_BIN`): the
  real `text-generation-launcher` starting the real router and shard (`live.py`, `test_live.py`).

* local shard — `TGI_SRC` (a clean TGI v3.3.7 tree) or `TGI_CSD_SHARD_VENV` (a venv prepared by
  `integration_tests/shard/build.py`): the real patched `text-generation-server serve` on CPU, driven over
  gRPC like the router (`test_shard.py`).
* container — `DOCKER_IMAGE` (an image built from `patches/Dockerfile`): started with the docker SDK like
  TGI's `docker_launcher`, driven over HTTP with `text_generation.AsyncClient` (`test_http.py`).
* endpoint — `TGI_CSD_URL`: the same HTTP tests against a running deployment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _local_shard_reason() -> str | None:
    if not (os.environ.get("TGI_SRC") or os.environ.get("TGI_CSD_SHARD_VENV")):
        return "local shard: set TGI_SRC to a clean TGI v3.3.7 source tree (or TGI_CSD_SHARD_VENV to a prepared venv)"
    src = os.environ.get("TGI_SRC")
    if src and not (Path(src) / "server" / "text_generation_server").is_dir():
        return f"local shard: TGI_SRC={src} is not a TGI source tree"
    for module in ("grpc", "google.protobuf"):
        try:
            __import__(module)
        except ImportError:
            return f"local shard: the test process needs `{module}` (pip install grpcio protobuf)"
    return None


@pytest.fixture(scope="session")
def shard_env():
    reason = _local_shard_reason()
    if reason:
        if os.environ.get("TGI_CSD_REQUIRE_LIVE"):
            pytest.fail(f"TGI_CSD_REQUIRE_LIVE is set but {reason}")
        pytest.skip(reason)
    from transformers import AutoTokenizer

    from integration_tests.shard import build
    from tgi_csd.models import fetch_model

    work = Path(os.environ.get("TGI_CSD_WORK") or Path.home() / ".cache" / "tgi-csd" / "integration")
    venv = build.prepare(Path(os.environ["TGI_SRC"]) if os.environ.get("TGI_SRC") else None, work)
    model = fetch_model("smollm2-135m")
    runtime = Path(tempfile.mkdtemp(prefix="tgi-csd-shards-"))
    yield {"venv": venv, "stubs": build.client_stubs(venv), "model": model, "work": runtime,
           "tokenizer": AutoTokenizer.from_pretrained(model)}
    logs = work / "logs"  # every server's log of the last run, for a failure's post-mortem
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for log in runtime.glob("*.log"):
        shutil.copy(log, logs / log.name)
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="session")
def shards(shard_env):
    """`shards(name, speculate=…, strategy=…, config=…, dtype=…)`: a started shard + client, reused per name."""
    from integration_tests.shard.build import Shard
    from integration_tests.shard.client import ShardClient

    started: dict[str, tuple] = {}

    def get(name: str, **options):
        if name not in started:
            shard = Shard(shard_env["venv"], shard_env["model"], shard_env["work"], name, **options)
            try:
                shard.wait_ready()
                client = ShardClient(shard.address, shard_env["stubs"], shard_env["tokenizer"])
                client.start()
            except Exception:
                print(shard.tail())
                shard.stop()
                raise
            started[name] = (shard, client)
        return started[name][1]

    yield get
    for shard, client in started.values():
        client.close()
        shard.stop()


# -- the live launcher -----------------------------------------------------------------------------------
@dataclass
class LiveEnv:
    bin_dir: Path
    venv: Path
    model: Path
    work: Path

    def run_to_exit(self, name: str, **options) -> tuple[int, str]:
        from integration_tests.live import run_to_exit

        return run_to_exit(self.bin_dir, self.venv, self.model, self.work, name, **options)


@pytest.fixture(scope="session")
def live_env(shard_env):
    from integration_tests.live import tgi_binaries

    bin_dir = tgi_binaries()
    if bin_dir is None:
        if os.environ.get("TGI_CSD_REQUIRE_LIVE"):
            pytest.fail("live: TGI_CSD_REQUIRE_LIVE is set but the patched launcher is not built (make tgi)")
        pytest.skip("live: the patched launcher and router are not built; run `make tgi` (or set TGI_CSD_TGI_BIN)")
    return LiveEnv(bin_dir, shard_env["venv"], shard_env["model"], shard_env["work"])


@pytest.fixture(scope="session")
def live_servers(live_env):
    """`live_servers(name, speculate=…, strategy=…, config=…)`: a started launcher, reused per name."""
    from integration_tests.live import live_server

    started: dict[str, tuple] = {}
    stack = contextlib.ExitStack()

    def get(name: str, **options):
        if name not in started:
            if options.get("config"):
                from integration_tests.live import absolute_config

                options["config"] = str(absolute_config(REPO / options["config"], REPO, live_env.work))
            started[name] = stack.enter_context(live_server(live_env.bin_dir, live_env.venv, live_env.model,
                                                            live_env.work, name, **options))
        return started[name]

    with stack:
        yield get


# -- HTTP launchers ------------------------------------------------------------------------------------
def _http_reason(kind: str) -> str | None:
    if kind == "container" and not os.environ.get("DOCKER_IMAGE"):
        return "container: set DOCKER_IMAGE to an image built from patches/Dockerfile (needs a Docker engine)"
    if kind == "endpoint" and not os.environ.get("TGI_CSD_URL"):
        return "endpoint: set TGI_CSD_URL to a running TGI with the csd strategy (e.g. http://localhost:8080)"
    for module in ("text_generation", "pytest_asyncio") + (("docker",) if kind == "container" else ()):
        try:
            __import__(module)
        except ImportError:
            return f"{kind}: needs `{module}` (pip install text-generation pytest-asyncio docker)"
    return None


@pytest.fixture(scope="session", params=["container", "endpoint"])
def http_url(request):
    reason = _http_reason(request.param)
    if reason:
        pytest.skip(reason)
    if request.param == "endpoint":
        yield os.environ["TGI_CSD_URL"].rstrip("/")
        return
    from integration_tests.docker_launcher import docker_launcher

    with docker_launcher(os.environ["DOCKER_IMAGE"]) as url:
        yield url


try:
    import syrupy  # noqa: F401
except ImportError:  # the snapshot test skips instead of erroring on a missing fixture

    @pytest.fixture
    def snapshot():
        pytest.skip("syrupy is not installed (pip install syrupy)")
