"""The `local shard` launcher: patch a TGI v3.3.7 tree, install its server into a venv, run the real shard.

`prepare(tgi_src)` copies the tree (`TGI_SRC`) into a scratch folder, applies `patches/` with
`tgi-csd patch`, makes a venv that is exactly `locks/shard.txt` (what TGI 3.3.7's image installs, plus
tgi-csd's runtime dependencies) with uv, installs tgi-csd (editable) and the patched server into it
without dependencies, and generates the gRPC stubs from the tree's `proto/v3` (for the server, and for
the test's router-like client). Cached by a key over the series, the lock and the tree;
`TGI_CSD_SHARD_VENV` points at a venv prepared earlier instead.

`Shard` starts `text-generation-server serve` on CPU. TGI's CPU flash path needs
`intel_extension_for_pytorch`; when the venv has none (IPEX has no build for this torch on PyPI), the
pure-torch stand-in in `ipex_standin/` goes first on the shard's PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERIES = REPO / "patches"
LOCK = REPO / "locks" / "shard.txt"
STANDIN = HERE / "ipex_standin"


def _run(cmd: list[str], log: Path, **kwargs) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode:
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` failed ({result.returncode}); see {log}")


def cache_key(tgi_src: Path) -> str:
    digest = hashlib.sha256()
    for patch in sorted(SERIES.glob("*.patch")):
        digest.update(patch.read_bytes())
    digest.update(LOCK.read_bytes())
    digest.update(str(tgi_src.resolve()).encode())
    return digest.hexdigest()[:12]


def generate_stubs(python: Path, proto_dir: Path, out: Path, log: Path) -> None:
    """TGI's `make gen-server-raw`: python + grpc stubs from proto/v3, imports made package-relative."""
    out.mkdir(parents=True, exist_ok=True)
    _run([str(python), "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
          str(proto_dir / "generate.proto")], log)
    fix_stub_imports(out)


def fix_stub_imports(out: Path) -> None:
    """Make the generated stubs' imports package-relative, as TGI's Makefile does with sed."""
    for path in out.glob("*.py"):
        text = path.read_text().replace("\nimport generate_pb2", "\nfrom . import generate_pb2")
        path.write_text(text)
    (out / "__init__.py").touch()


def prepare(tgi_src: Path, work: Path) -> Path:
    """A venv whose `text-generation-server` is the patched v3.3.7 server; returns the venv folder."""
    preset = os.environ.get("TGI_CSD_SHARD_VENV")
    if preset:
        return Path(preset)
    root = work / cache_key(tgi_src)
    venv = root / "venv"
    if (root / "ready").is_file():
        return venv
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log = root / "build.log"
    tree = root / "tgi"
    shutil.copytree(tgi_src, tree, ignore=shutil.ignore_patterns(".git", "target", "node_modules"))
    _run([sys.executable, "-m", "tgi_csd.cli", "patch", "--tgi-src", str(tree), "--series", str(SERIES)], log,
         cwd=REPO)
    from uv import find_uv_bin

    uv = find_uv_bin()
    python = venv / "bin" / "python"
    _run([uv, "venv", "-q", "--python", sys.executable, str(venv)], log)
    _run([uv, "pip", "sync", "-q", "--python", str(python), "--require-hashes", str(LOCK)], log)
    _run([uv, "pip", "install", "-q", "--python", str(python), "--no-deps", "-e", str(REPO)], log)
    server = tree / "server"
    generate_stubs(python, tree / "proto" / "v3", server / "text_generation_server" / "pb", log)
    _run([uv, "pip", "install", "-q", "--python", str(python), "--no-deps", "--no-build-isolation", str(server)], log)
    generate_stubs(python, tree / "proto" / "v3", root / "client_pb" / "tgi_pb", log)
    (root / "ready").write_text(str(tgi_src))
    return venv


def client_stubs(venv: Path) -> Path:
    """The folder holding the `tgi_pb` client stubs generated next to `venv`."""
    stubs = venv.parent / "client_pb"
    if not (stubs / "tgi_pb" / "generate_pb2.py").is_file():
        tree = venv.parent / "tgi"
        if not tree.is_dir():
            raise RuntimeError(f"{venv}: no client stubs next to it (prepare it with integration_tests/shard/build.py)")
        generate_stubs(venv / "bin" / "python", tree / "proto" / "v3", stubs / "tgi_pb", venv.parent / "build.log")
    return stubs


def has_real_ipex(venv: Path) -> bool:
    probe = "import importlib.util as u; print(u.find_spec('intel_extension_for_pytorch') is not None)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True)
    return out.stdout.strip() == "True"


def environment(venv: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What TGI's server needs on CPU: paged attention, no prefix caching, offline, IPEX (or the stand-in)."""
    env = {**os.environ, "ATTENTION": "paged", "PREFIX_CACHING": "0", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(extra or {})}
    env.pop("SPECULATION_STRATEGY", None)
    env.pop("SPECULATION_CONFIG", None)
    if not has_real_ipex(venv):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDIN), env.get("PYTHONPATH")]))
    return env


class Shard:
    """One `text-generation-server serve` process on a unix socket."""

    def __init__(self, venv: Path, model: Path, workdir: Path, name: str, speculate: int = 0,
                 strategy: str | None = None, config: str | None = None, dtype: str = "float32",
                 env_only: bool = False, extra_env: dict[str, str] | None = None) -> None:
        self.uds = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        args = ["serve", str(model), "--uds-path", str(self.uds)]
        env = environment(venv, {"TGI_CSD_SHARD_DTYPE": dtype, **(extra_env or {})})
        if speculate:
            args += ["--speculate", str(speculate)]
        if strategy and env_only:  # what an unpatched launcher does: the shard reads the environment
            env["SPECULATION_STRATEGY"] = strategy
            if config:
                env["SPECULATION_CONFIG"] = config
        elif strategy:
            args += ["--speculation-strategy", strategy] + (["--speculation-config", config] if config else [])
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen([str(venv / "bin" / "python"), str(HERE / "serve.py"), *args], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    @property
    def address(self) -> str:
        return f"unix://{self.uds}-0"

    def wait_ready(self, timeout: float = 300) -> None:
        socket = Path(f"{self.uds}-0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"shard exited ({self.process.returncode}):\n{self.tail()}")
            if socket.exists():
                return
            time.sleep(0.5)
        raise RuntimeError(f"shard not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


if __name__ == "__main__":  # prepare once: python integration_tests/shard/build.py TGI_SRC [WORK]
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache" / "tgi-csd" / "integration"
    print(prepare(source, target))
