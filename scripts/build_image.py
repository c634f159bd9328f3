"""Build the CPU test image of TGI + tgi-csd with no registry: `make image-cpu` (prints the image's tag).

No image can be pulled here, so nothing starts `FROM` one:
1. **base**: `debootstrap` Debian bookworm (minbase + Python 3.11, its shared library for the router's pyo3,
   CA certificates, curl for the chart's `helm test` script) into a folder, kept as a tarball per package list.
2. **rootfs**: the base + what the official image holds where it holds it: `/usr/src/.venv` exactly
   `locks/shard.txt` (TGI 3.3.7's image versions + tgi-csd's dependencies) installed by uv inside a chroot
   (the host's uv cache bind-mounted, so wheels download once per machine), TGI's patched Python server
   with its gRPC stubs, tgi-csd as a wheel (`patches/install-plugin.sh`, shared with `patches/Dockerfile`),
   and the patched launcher and router from `make tgi` in `/usr/local/bin`.
3. **test additions** (what makes it a CPU *test* image, not the product): `/opt/tgi-csd/bin` first on PATH
   holds a `text-generation-server` wrapper that runs the shard through `integration_tests/shard/serve.py`
   (float32 when `TGI_CSD_SHARD_DTYPE=float32`: TGI's CLI has no float32) with the pure-torch IPEX stand-in
   first on its PYTHONPATH (TGI's CPU flash path imports IPEX, which has no build for this torch).
4. `docker import` with the official image's entrypoint (`text-generation-launcher`), WORKDIR and env names.

The tag is `tgi-csd-cpu:<key>`, the key a hash of every input (base packages, lock, patches, the binaries,
tgi-csd's sources, this recipe); an image with that tag already present is reused (a warm run builds nothing).
The model is not in the image: it comes on a volume at /data, as the chart's PVC provides it. Needs root
(debootstrap, chroot, mounts) and a Docker engine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import build_tgi  # noqa: E402

from integration_tests.shard.build import fix_stub_imports  # noqa: E402

WORK = Path(os.environ.get("TGI_CSD_WORK") or Path.home() / ".cache" / "tgi-csd") / "image"
SUITE, MIRROR = "bookworm", os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["python3.11", "libpython3.11", "ca-certificates", "curl"]
LOCK = REPO / "locks" / "shard.txt"
SHARD = REPO / "integration_tests" / "shard"
RECIPE_VERSION = "1"  # bump when this recipe changes what it builds
REPOSITORY = "tgi-csd-cpu"
HOST_CA = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA = "/tmp/build-ca.crt"
ENV = {  # the official image's names; PATH puts the test wrapper first
    "PATH": "/opt/tgi-csd/bin:/usr/src/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HF_HOME": "/data",
    "PORT": "80",
    "VIRTUAL_ENV": "/usr/src/.venv",
}
SERVER_TAKES_THE_FLAG = ("import inspect, text_generation_server.cli as c; "
                         "assert 'speculation_strategy' in inspect.signature(c.serve).parameters")
WRAPPER = """#!/bin/sh
# CPU test image only: the real shard, through the suite's float32 wrapper, with the IPEX stand-in.
export PYTHONPATH=/opt/tgi-csd/test/ipex_standin${PYTHONPATH:+:$PYTHONPATH}
exec /usr/src/.venv/bin/python /opt/tgi-csd/test/serve.py "$@"
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    log("$ " + " ".join(map(str, command)))
    return subprocess.run(command, check=True, **kwargs)


def digest_files(digest, paths: list[Path]) -> None:
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path.name).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def base_key() -> str:
    return hashlib.sha256(f"{SUITE}:{sorted(PACKAGES)}".encode()).hexdigest()[:12]


def image_key(bin_dir: Path) -> str:
    digest = hashlib.sha256(f"{base_key()}:{RECIPE_VERSION}:{ENV}:{WRAPPER}".encode())
    sources = [p for p in (REPO / "tgi_csd").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources += [REPO / "pyproject.toml", LOCK, Path(__file__), REPO / "patches" / "install-plugin.sh",
                SHARD / "serve.py", *(p for p in (SHARD / "ipex_standin").rglob("*.py"))]
    sources += sorted((REPO / "patches").glob("*.patch")) + [bin_dir / name for name in build_tgi.BINARIES]
    digest_files(digest, sources)
    return digest.hexdigest()[:12]


def base_tarball() -> Path:
    """Debian's minimal system with `PACKAGES`, once per package list."""
    tarball = WORK / f"base-{base_key()}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        sys.exit("debootstrap is not installed: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        rootfs = Path(scratch) / "rootfs"
        run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR],
            stdout=subprocess.DEVNULL)
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
        os.replace(partial, tarball)
    return tarball


@contextlib.contextmanager
def mounted(rootfs: Path, uv_cache: Path):
    """/proc, /dev and the host's uv cache inside `rootfs`; DNS and the CA bundle (which may hold a proxy's
    CA) from the host, for the build only."""
    binds = [(Path("/proc"), rootfs / "proc"), (Path("/dev"), rootfs / "dev"), (uv_cache, rootfs / "root/.cache/uv")]
    done = []
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    shutil.copy(HOST_CA, rootfs / BUILD_CA.lstrip("/"))
    try:
        for source, target in binds:
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", str(source), str(target)])
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)
        (rootfs / "etc" / "resolv.conf").write_text("")
        (rootfs / BUILD_CA.lstrip("/")).unlink(missing_ok=True)


def chroot(rootfs: Path, script: str) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "UV_LINK_MODE": "copy",
           "UV_PYTHON_DOWNLOADS": "never", "LANG": "C.UTF-8", "SSL_CERT_FILE": BUILD_CA}
    binary = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin") or "chroot"
    run([binary, str(rootfs), "/bin/sh", "-ec", script], env=env)


def install(rootfs: Path, bin_dir: Path) -> None:
    """Everything above the base (steps 2 and 3 of the module's docstring)."""
    from uv import find_uv_bin

    tree = build_tgi.patched_tree(build_tgi.build_key(build_tgi.series_key()))
    staging = rootfs / "opt" / "tgi-csd"
    build = staging / "build"
    build.mkdir(parents=True)
    shutil.copy(LOCK, build / "shard.txt")
    shutil.copy(REPO / "patches" / "install-plugin.sh", build / "install-plugin.sh")
    run([find_uv_bin(), "build", "-q", "--wheel", "--out-dir", str(build), str(REPO)], stdout=subprocess.DEVNULL)
    shutil.copytree(tree / "server", rootfs / "usr" / "src" / "server",
                    ignore=shutil.ignore_patterns("tests", "__pycache__"))
    shutil.copytree(tree / "proto", rootfs / "usr" / "src" / "proto")
    shutil.copy(find_uv_bin(), rootfs / "usr" / "local" / "bin" / "uv")
    for name in build_tgi.BINARIES:
        shutil.copy2(bin_dir / name, rootfs / "usr" / "local" / "bin" / name)
    test = staging / "test"
    test.mkdir()
    shutil.copy(SHARD / "serve.py", test / "serve.py")
    shutil.copytree(SHARD / "ipex_standin", test / "ipex_standin", ignore=shutil.ignore_patterns("__pycache__"))
    (staging / "bin").mkdir()
    wrapper = staging / "bin" / "text-generation-server"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    uv_cache = Path(subprocess.run([find_uv_bin(), "cache", "dir"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    uv_cache.mkdir(parents=True, exist_ok=True)
    pb = "/usr/src/server/text_generation_server/pb"
    with mounted(rootfs, uv_cache):
        chroot(rootfs, f"""
            uv venv -q --python /usr/bin/python3.11 /usr/src/.venv
            uv pip sync -q --python /usr/src/.venv/bin/python --require-hashes /opt/tgi-csd/build/shard.txt
            mkdir -p {pb}
            /usr/src/.venv/bin/python -m grpc_tools.protoc -I/usr/src/proto/v3 --python_out={pb} \\
                --grpc_python_out={pb} /usr/src/proto/v3/generate.proto
        """)
        fix_stub_imports(rootfs / pb.lstrip("/"))
        chroot(rootfs, f"""
            uv pip install -q --python /usr/src/.venv/bin/python --no-deps --no-build-isolation /usr/src/server
            sh /opt/tgi-csd/build/install-plugin.sh /opt/tgi-csd/build/tgi_csd-*.whl
            # The patched server takes the flag (its --help truncates long option names).
            ATTENTION=paged PREFIX_CACHING=0 PYTHONPATH=/opt/tgi-csd/test/ipex_standin /usr/src/.venv/bin/python -c \\
                "{SERVER_TAKES_THE_FLAG}"
            # The root filesystem is read-only at run time: byte-compile now.
            /usr/src/.venv/bin/python -m compileall -q -j 0 /usr/src/.venv/lib /usr/src/server /opt/tgi-csd/test \\
                >/dev/null || true
        """)
    shutil.rmtree(build)
    shutil.rmtree(rootfs / "root" / ".cache", ignore_errors=True)


def remove_rootfs(scratch: Path) -> None:
    """Delete a build folder, never through a mount still inside it (that would delete the host's files)."""
    mounts = Path("/proc/self/mounts").read_text()
    if f" {scratch}/" in mounts:
        sys.exit(f"{scratch}: something is still mounted inside; unmount it, then delete the folder")
    shutil.rmtree(scratch, ignore_errors=True)


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build(bin_dir: Path) -> str:
    tag = f"{REPOSITORY}:{image_key(bin_dir)}"
    if image_exists(tag):
        return tag
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    base = base_tarball()
    scratch = Path(tempfile.mkdtemp(dir=WORK))
    rootfs = scratch / "rootfs"
    try:
        rootfs.mkdir()
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(base)])
        install(rootfs, bin_dir)
        changes = [f"ENV {key}={value}" for key, value in ENV.items()]
        # As patches/Dockerfile: the chart's user, in a folder it can write (the router's tokenizer copy).
        changes += ["WORKDIR /tmp", "USER 10001:10001", 'ENTRYPOINT ["text-generation-launcher"]', "CMD []"]
        command = ["docker", "import", *(arg for change in changes for arg in ("--change", change)), "-", tag]
        log("$ tar -C rootfs -c . | " + " ".join(command))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(command, stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait():
            sys.exit("tar of the rootfs failed")
    finally:
        remove_rootfs(scratch)
    log(f"built {tag} in {time.monotonic() - started:.0f} s")
    older = subprocess.run(["docker", "images", "-q", "--filter", f"reference={REPOSITORY}", "--filter",
                            f"before={tag}"], capture_output=True, text=True).stdout.split()
    if older:  # a cache, not a registry: earlier builds (several GB each) go
        subprocess.run(["docker", "rmi", "-f", *older], capture_output=True)
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-tag", action="store_true", help="print the tag if the image exists, else exit 1")
    args = parser.parse_args()
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        sys.exit("no Docker engine answers (docker info)")
    bin_dir = build_tgi.build(build_tgi.series_key())
    tag = f"{REPOSITORY}:{image_key(bin_dir)}"
    if args.print_tag:
        if not image_exists(tag):
            sys.exit(1)
    else:
        tag = build(bin_dir)
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True, text=True,
                          check=True).stdout.strip()
    log(f"image size: {int(size) / 2**30:.2f} GiB")
    print(f"TGI_CSD_IMAGE={tag}")


if __name__ == "__main__":
    main()
