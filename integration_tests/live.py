"""The live-process launcher: the real, patched `text-generation-launcher` (built by `scripts/build_tgi.py`)
starting the real router and the real Python shard, on free 127.0.0.1 ports.

The shard is the venv `shard/build.py` prepares (TGI 3.3.7's image versions + tgi-csd + the patched server);
the launcher's `python` and the router's embedded Python (its tokenizer) see that venv too.
The launcher spawns `text-generation-server` by name, so a thin wrapper put first on its `PATH` runs
`shard/serve.py` with that venv's Python, which forces float32: TGI's CLI offers only float16/bfloat16, and
exact comparisons need float32 on CPU. TGI's CPU flash path imports IPEX; the pure-torch stand-in
(`shard/ipex_standin`) goes first on the shard's `PYTHONPATH`. `ATTENTION=paged`, `PREFIX_CACHING=0`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVE = HERE / "shard" / "serve.py"
STANDIN = HERE / "shard" / "ipex_standin"


SPECULATE = 4
# The live tier's servers by name: plain decoding (the reference), TGI's stock n-gram, and the strategy with
# the MaG default, the distilled cascade, the adaptive one and per-request profiles.
SERVERS = {
    "plain": {},
    "stock": {"speculate": SPECULATE},
    "csd": {"speculate": SPECULATE, "strategy": "csd"},
    "distilled": {"speculate": SPECULATE, "strategy": "csd", "config": "examples/tgi-csd-distilled.yaml"},
    "adaptive": {"speculate": SPECULATE, "strategy": "csd", "config": "examples/tgi-adaptive.yaml"},
    "profiles": {"speculate": SPECULATE, "strategy": "csd", "config": "examples/tgi-profiles.yaml"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tgi_binaries() -> Path | None:
    """The folder with the patched launcher and router: `$TGI_CSD_TGI_BIN`, or what `scripts/build_tgi.py`
    built for the current patch series (None when not built)."""
    if os.environ.get("TGI_CSD_TGI_BIN"):
        return Path(os.environ["TGI_CSD_TGI_BIN"])
    out = subprocess.run(["python", str(REPO / "scripts" / "build_tgi.py"), "--print-bin"], capture_output=True,
                         text=True)
    return Path(out.stdout.strip()) if out.returncode == 0 else None


@dataclass
class LiveServer:
    url: str
    log_path: Path
    process: subprocess.Popen
    metrics_port: int

    def get(self, path: str, port: str = "http") -> str:
        """GET `path` on the server's port (`http`) or the strategy's metrics port (`csd-metrics`), as the
        container's ports are named."""
        base = self.url if port == "http" else f"http://127.0.0.1:{self.metrics_port}"
        with urllib.request.urlopen(f"{base}{path}", timeout=60) as response:
            return response.read().decode()

    def info(self) -> dict:
        return json.loads(self.get("/info"))

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def absolute_config(config: Path, base: Path, workdir: Path) -> Path:
    """A copy of cascade config `config` in `workdir` whose relative file paths (adapters, separate drafter
    models, bigram tables) are made absolute against `base`: the launcher runs in its own folder (TGI's router
    writes a tokenizer copy into its working directory), while the examples' paths are relative to the
    repository root."""
    import yaml

    data = yaml.safe_load(config.read_text())
    for drafter in data.get("drafters", []):
        for key in ("adapter", "model", "bigram"):
            value = drafter.get(key)
            if isinstance(value, str) and value != "default" and not Path(value).is_absolute() \
                    and (base / value).exists():
                drafter[key] = str(base / value)
    copy = workdir / f"{config.stem}.abs.yaml"
    copy.write_text(yaml.safe_dump(data))
    return copy


def command(bin_dir: Path, model: Path, workdir: Path, name: str, port: int, *, speculate: int = 0,
            strategy: str | None = None, config: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    args = [str(bin_dir / "text-generation-launcher"), "--model-id", str(model), "--port", str(port),
            "--master-port", str(free_port()), "--shard-uds-path", str(workdir / f"{name}.sock"),
            "--prometheus-port", str(free_port()), "--hostname", "127.0.0.1",
            "--max-input-tokens", "512", "--max-total-tokens", "1024", "--max-batch-prefill-tokens", "1024",
            "--max-concurrent-requests", "64", "--cuda-graphs", "0"]
    if speculate:
        args += ["--speculate", str(speculate)]
    if strategy:
        args += ["--speculation-strategy", strategy]
    if config:
        args += ["--speculation-config", config]
    return [*args, *extra]


def environment(bin_dir: Path, venv: Path, workdir: Path, name: str, metrics_port: int) -> dict[str, str]:
    """The launcher's environment: the shard wrapper, the router and the launcher first on PATH."""
    wrapper_dir = workdir / f"path-{name}"
    wrapper_dir.mkdir(parents=True, exist_ok=True)
    wrapper = wrapper_dir / "text-generation-server"
    wrapper.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" "{SERVE}" "$@"\n')
    wrapper.chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if key not in ("SPECULATION_STRATEGY", "SPECULATION_CONFIG", "SPECULATE", "VIRTUAL_ENV")}
    # The launcher asks `python` about GPUs and the router embeds Python (pyo3) for the tokenizer: both must
    # see the shard's venv, as they see the image's in TGI's container.
    site = next((venv / "lib").glob("python3*/site-packages"))
    env.update({
        "PATH": os.pathsep.join([str(wrapper_dir), str(bin_dir), str(venv / "bin"), env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(STANDIN), str(site)]), "ATTENTION": "paged", "PREFIX_CACHING": "0",
        "HF_HUB_OFFLINE": "1",
        "TGI_CSD_SHARD_DTYPE": "float32", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "TGI_CSD_METRICS_PORT": str(metrics_port), "LOG_LEVEL": "info",
    })
    return env


@contextlib.contextmanager
def live_server(bin_dir: Path, venv: Path, model: Path, workdir: Path, name: str, timeout: float = 600,
                **options):
    """A started launcher (healthy: `/health` answers 200); stopped and its log kept afterwards."""
    port, metrics_port = free_port(), free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command(bin_dir, model, workdir, name, port, **options),
                                   env=environment(bin_dir, venv, workdir, name, metrics_port), stdout=log,
                                   stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        server = LiveServer(f"http://127.0.0.1:{port}", log_path, process, metrics_port)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{name}: the launcher exited ({process.returncode}):\n{server.tail()}")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: not healthy after {timeout:.0f} s:\n{server.tail()}")
                time.sleep(1)
            yield server
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the launcher stops its router and shards on SIGTERM
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def run_to_exit(bin_dir: Path, venv: Path, model: Path, workdir: Path, name: str, timeout: float = 300,
                **options) -> tuple[int, str]:
    """Run a launcher that is expected to refuse to start: (exit status, its output)."""
    env = environment(bin_dir, venv, workdir, name, free_port())
    out = subprocess.run(command(bin_dir, model, workdir, name, free_port(), **options), env=env, cwd=workdir,
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr
