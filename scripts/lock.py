"""Refresh the hashed lock files in `locks/`, one per nox stack: `make lock` (or `UPGRADE=scipy make lock`).

Each `locks/<stack>.txt` is `uv pip compile --generate-hashes` output for CPython 3.11 on x86_64 Linux (the CI
machine and TGI's image). Pins already in a lock are kept: a refresh changes nothing unless an input changed
or `--upgrade-package NAME` / `--upgrade` asks for it, so a new upstream release never reaches CI by itself.

The `tgi-3.3.7` stacks are constrained to what TGI 3.3.7's image installs: `locks/tgi-3.3.7-image.txt`,
written here from `server/uv.lock` in TGI's source archive by following the dependency graph of the
`uv sync --frozen --extra ...` line in TGI's Dockerfile (CPython 3.11, x86_64 Linux). Two exceptions,
stated in that file: torch is PyPI's 2.7.0 (the image's `2.7.0+cu128` comes from download.pytorch.org,
which this project's machines cannot reach; same release, CUDA 12.6 instead of 12.8), so the image's
CUDA wheels (`nvidia-*`) are left to torch's own requirements.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import tomllib
from packaging.markers import Marker
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "locks"
ARCHIVE = REPO.parent / "shared" / "tgi" / "text-generation-inference-3.3.7.tar.gz"
IMAGE = LOCKS / "tgi-3.3.7-image.txt"
# TGI 3.3.7's Dockerfile: `uv sync --frozen --extra gen --extra bnb ... --extra torch` on CPython 3.11.
IMAGE_EXTRAS = ("gen", "bnb", "accelerate", "compressed-tensors", "quantize", "peft", "outlines", "torch")
IMAGE_ENV = {"python_full_version": "3.11.11", "python_version": "3.11", "platform_machine": "x86_64",
             "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
NOT_CONSTRAINED = "nvidia-"  # CUDA wheels of the image's cu128 torch build; PyPI's torch brings its own
# Not in the image but in its lock (TGI's `dev` extra, via pytest): the plugin brings pluggy, at the lock's version.
FROM_LOCK_ONLY = ("pluggy",)


@dataclass(frozen=True)
class Stack:
    """One lock: `locks/<name>.in` (plus the project's `extras`, when given) resolved into `locks/<name>.txt`."""

    name: str
    extras: tuple[str, ...] = ()
    image: bool = False  # constrained to TGI 3.3.7's image
    no_deps: bool = False


STACKS = [
    Stack("nox"),
    Stack("lint"),
    Stack("tests-current", extras=("dev", "bench", "tgi")),
    Stack("tests-tgi-3.3.7", extras=("dev", "bench", "tgi"), image=True),
    Stack("chart"),
    Stack("integration", extras=("dev", "bench", "tgi"), image=True),
    Stack("shard", extras=("tgi",), image=True),
    Stack("weights", no_deps=True),
]


def image_versions(archive: Path) -> dict[str, str]:
    """Package -> version that TGI 3.3.7's image installs, from the archive's `server/uv.lock`."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("server/uv.lock"))
        lock = tomllib.load(tar.extractfile(member))
    packages: dict[str, list[dict]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], []).append(package)

    def applies(dep: dict) -> bool:
        return "marker" not in dep or Marker(dep["marker"]).evaluate(IMAGE_ENV)

    def resolve(dep: dict) -> dict:
        [package] = [p for p in packages[dep["name"]] if dep.get("version", p["version"]) == p["version"]]
        return package

    root = packages["text-generation-server"][0]
    todo = [d for d in root["dependencies"] if applies(d)]
    todo += [d for extra in IMAGE_EXTRAS for d in root["optional-dependencies"][extra] if applies(d)]
    chosen: dict[str, str] = {}
    visited: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        dep = todo.pop()
        package = resolve(dep)
        seen = chosen.get(package["name"])
        if seen is not None and seen != package["version"]:
            raise SystemExit(f"{archive}: two versions of {package['name']} in the image: {seen}, {package['version']}")
        extras = dep.get("extra", [])
        key = (package["name"], tuple(extras))
        if key in visited:
            continue
        visited.add(key)
        chosen[package["name"]] = package["version"]
        todo += [d for d in package.get("dependencies", []) if applies(d)]
        for extra in extras:
            todo += [d for d in package.get("optional-dependencies", {}).get(extra, []) if applies(d)]
    for name in FROM_LOCK_ONLY:
        [package] = packages[name]
        chosen.setdefault(name, package["version"])
    return chosen


def write_image_constraints(archive: Path) -> None:
    lines = [
        "# What TGI 3.3.7's image installs (server/uv.lock, CPython 3.11, x86_64 Linux), as constraints for the",
        "# tgi-3.3.7 stacks. Written by scripts/lock.py from the TGI source archive; do not edit.",
        "# torch: PyPI's 2.7.0 (the image has 2.7.0+cu128 from download.pytorch.org, unreachable here; same release).",
        f"# Not constrained: {NOT_CONSTRAINED}* (the cu128 build's CUDA wheels; PyPI's torch 2.7.0 pins its own).",
        f"# Not in the image, from its lock: {', '.join(FROM_LOCK_ONLY)} (TGI's dev extra; the plugin installs it).",
    ]
    for name, version in sorted(image_versions(archive).items()):
        if name.startswith(NOT_CONSTRAINED) or name == "text-generation-server":
            continue
        lines.append(f"{name}=={Version(version).public}")
    IMAGE.write_text("\n".join(lines) + "\n")


def uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def compile_stack(stack: Stack, upgrade: list[str]) -> None:
    inputs = [str(LOCKS / f"{stack.name}.in")]
    if stack.extras:
        inputs.insert(0, "pyproject.toml")
    command = [uv(), "pip", "compile", "--quiet", *inputs, "--output-file", f"locks/{stack.name}.txt",
               "--generate-hashes", "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
               "--custom-compile-command", "make lock"]
    command += [arg for extra in stack.extras for arg in ("--extra", extra)]
    if stack.image:
        command += ["--constraint", str(IMAGE.relative_to(REPO))]
    if stack.no_deps:
        command.append("--no-deps")
    command += upgrade
    print(f"locks/{stack.name}.txt", flush=True)
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "UV_NO_CONFIG": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                        help="move this package to its newest allowed release (repeatable)")
    parser.add_argument("--upgrade", action="store_true", help="move every package to its newest allowed release")
    parser.add_argument("--archive", type=Path, default=Path(os.environ.get("TGI_ARCHIVE", ARCHIVE)),
                        help="TGI 3.3.7's source archive (default: ../shared/tgi/...; env TGI_ARCHIVE)")
    parser.add_argument("stacks", nargs="*", help="only these stacks (default: all)")
    args = parser.parse_args()
    if args.archive.is_file():
        write_image_constraints(args.archive)
    elif not IMAGE.is_file():
        sys.exit(f"{args.archive}: no TGI source archive to read server/uv.lock from (set TGI_ARCHIVE)")
    upgrade = ["--upgrade"] if args.upgrade else [f"--upgrade-package={name}" for name in args.upgrade_package]
    for stack in STACKS:
        if not args.stacks or stack.name in args.stacks:
            compile_stack(stack, upgrade)


if __name__ == "__main__":
    main()
