"""Launchers for the live-TGI suite, chosen by environment (each skipped with its reason when unavailable):

* live — `TGI_SRC` (or `TGI_CSD_SHARD_VENV`) and the patched binaries (`make tgi`, or `TGI_CSD_TGI_BIN`): the
  real `text-generation-launcher` starting the real router and shard (`live.py`, `test_live.py`).

* local shard — `TGI_SRC` (a clean TGI v3.3.7 tree) or `TGI_CSD_SHARD_VENV` (a venv prepared by
  `integration_tests/shard/build.py`): the real patched `text-generation-server serve` on CPU, driven over
  gRPC like the router (`test_shard.py`).
* container — a Docker engine and `TGI_CSD_IMAGE` (the CPU test image, `make image-cpu`): the image run with
  exactly the container spec `helm template` renders from `charts/tgi-csd/ci/cpu-values.yaml`
  (`chart_container.py`, `test_container.py`).
* endpoint — `TGI_CSD_URL`: HTTP tests against a running deployment (`test_http.py`).

`TGI_CSD_REQUIRE_LIVE` / `TGI_CSD_REQUIRE_CONTAINER` (set by `nox -s integration` when it built the
launcher / the image) turn a tier that cannot start into a failure instead of a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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


def work_dir() -> Path:
    return Path(os.environ.get("TGI_CSD_WORK") or Path.home() / ".cache" / "tgi-csd" / "integration")


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    """Every server's log of the last run, kept for a failure's post-mortem (emptied when a run starts)."""
    logs = work_dir() / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return logs


@pytest.fixture(scope="session")
def shard_env(logs_dir):
    reason = _local_shard_reason()
    if reason:
        if os.environ.get("TGI_CSD_REQUIRE_LIVE"):
            pytest.fail(f"TGI_CSD_REQUIRE_LIVE is set but {reason}")
        pytest.skip(reason)
    from transformers import AutoTokenizer

    from integration_tests.shard import build
    from tgi_csd.models import fetch_model

    venv = build.prepare(Path(os.environ["TGI_SRC"]) if os.environ.get("TGI_SRC") else None, work_dir())
    model = fetch_model("smollm2-135m")
    runtime = Path(tempfile.mkdtemp(prefix="tgi-csd-shards-"))
    yield {"venv": venv, "stubs": build.client_stubs(venv), "model": model, "work": runtime,
           "tokenizer": AutoTokenizer.from_pretrained(model)}
    for log in runtime.rglob("*.log"):
        shutil.copy(log, logs_dir / "-".join(log.relative_to(runtime).parts))
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
                client.log_path = shard.log_path  # the shard's output, for tests that read what it logged
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
    # Its own folder: a live server's shard socket must never be a shard tier's socket of the same name
    # (the router would talk to the other tier's still-running shard).
    work = shard_env["work"] / "live"
    work.mkdir(exist_ok=True)
    return LiveEnv(bin_dir, shard_env["venv"], shard_env["model"], work)


@pytest.fixture(scope="session")
def live_servers(live_env):
    """`live_servers(name)`: the started launcher configured as `live.SERVERS[name]`, reused per name."""
    from integration_tests.live import SERVERS, live_server

    started: dict[str, tuple] = {}
    stack = contextlib.ExitStack()

    def get(name: str):
        if name not in started:
            options = dict(SERVERS[name])
            if options.get("config"):
                from integration_tests.live import absolute_config

                options["config"] = str(absolute_config(REPO / options["config"], REPO, live_env.work))
            started[name] = stack.enter_context(live_server(live_env.bin_dir, live_env.venv, live_env.model,
                                                            live_env.work, name, **options))
        return started[name]

    with stack:
        yield get


# -- the container launcher ----------------------------------------------------------------------------
@dataclass
class ContainerEnv:
    spec: object  # chart_container.ContainerSpec
    volumes: dict
    network: str
    work: Path
    logs: Path


@pytest.fixture(scope="session")
def container_env(logs_dir):
    from integration_tests.chart_container import ContainerSpec, docker_available, prepare_volumes, render
    from tgi_csd.models import fetch_model

    reason = docker_available()
    if reason is None and not os.environ.get("TGI_CSD_IMAGE"):
        reason = "set TGI_CSD_IMAGE to the CPU test image (`make image-cpu` builds it and prints its tag)"
    if reason:
        if os.environ.get("TGI_CSD_REQUIRE_CONTAINER"):
            pytest.fail(f"TGI_CSD_REQUIRE_CONTAINER is set but container: {reason}")
        pytest.skip(f"container: {reason}")
    spec = ContainerSpec.from_manifests(render(os.environ["TGI_CSD_IMAGE"]))
    print(f"\ncontainer run settings (from the rendered chart):\n{spec.table()}")
    work = Path(tempfile.mkdtemp(prefix="tgi-csd-containers-"))
    network = f"tgi-csd-{os.getpid()}"
    subprocess.run(["docker", "network", "create", network], check=True, capture_output=True)
    try:
        yield ContainerEnv(spec, prepare_volumes(spec, fetch_model("smollm2-135m"), work), network, work,
                           logs_dir)
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def containers(container_env):
    """`containers(name)`: "csd" runs the chart's container spec as rendered; "plain" the same container
    with the speculation arguments removed (plain decoding, the exactness reference). Started once each."""
    from integration_tests.chart_container import run_container, without_speculation

    started: dict = {}
    stack = contextlib.ExitStack()

    def get(name: str):
        if name not in started:
            spec = container_env.spec
            args = {"csd": spec.args, "plain": without_speculation(spec.args)}[name]
            started[name] = stack.enter_context(run_container(
                spec, container_env.volumes, name, args, log_dir=container_env.logs, network=container_env.network,
                alias=spec.service["metadata"]["name"] if name == "csd" else None))
        return started[name]

    with stack:
        yield get


@pytest.fixture(scope="session")
def greedy():
    """`greedy(server)`: the token ids of `workload.greedy_batch` on `server`, computed once per server."""
    import asyncio

    from integration_tests.workload import greedy_batch

    done: dict[str, list[list[int]]] = {}

    def get(server) -> list[list[int]]:
        if server.url not in done:
            done[server.url] = asyncio.run(greedy_batch(server.url))
        return done[server.url]

    return get


# -- a running deployment ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def http_url():
    if not os.environ.get("TGI_CSD_URL"):
        pytest.skip("endpoint: set TGI_CSD_URL to a running TGI with the csd strategy (e.g. http://localhost:8080)")
    return os.environ["TGI_CSD_URL"].rstrip("/")


try:
    import syrupy  # noqa: F401
except ImportError:  # the snapshot test skips instead of erroring on a missing fixture

    @pytest.fixture
    def snapshot():
        pytest.skip("syrupy is not installed (pip install syrupy)")
