"""Build the patched TGI v3.3.7 launcher and v3 router from source: `make tgi` (prints the binaries' paths).

1. Unpack TGI's source archive (`$TGI_ARCHIVE`, default `../shared/tgi/text-generation-inference-3.3.7.tar.gz`)
   into `$TGI_CSD_WORK/tgi-build` (default `~/.cache/tgi-csd/tgi-build`), once per archive.
2. Apply `patches/` with `tgi-csd patch` into a tree keyed by the series' hash, and `git init` it (vergen
   reads git metadata for the binaries' version strings). `ADJUSTMENTS` below make the build work here,
   each with its reason: the router's `outlines-core` is a GitHub dependency (unreachable here), so the
   tree takes crates.io's 0.1.0 (the same `json_schema::to_regex`, used only for JSON-schema grammars);
   this machine's Rust 1.95 rejects `metrics` 0.23.0, so the lock takes 0.23.1 (that fix alone).
3. `patches/build-binaries.sh` (`cargo build --locked` of `text-generation-launcher` and
   `text-generation-router-v3`, the image recipe's Rust stage too) with the machine's
   Rust toolchain (TGI's `rust-toolchain.toml` pins 1.85.1, which this machine cannot fetch; `RUSTUP_TOOLCHAIN`
   overrides it), protoc from the system (Debian's `protobuf-compiler`) and the Python headers of the
   running interpreter (pyo3). The cargo target folder is keyed by the series' hash too, so a second run
   with the same patches rebuilds nothing. Crates come from crates.io (or cargo's cache in `~/.cargo`).
4. Copy the two binaries to `<work>/bin-<key>/` and print that folder; `--print-bin` prints it without
   building when it is already built (exit 1 when not).

Profile: `dev` without debug info and, as in release builds, without debug assertions (TGI 3.3.7 declares
`-p` twice in both binaries, which clap only refuses with debug assertions on). It compiles in a fraction of
`release-opt`'s time; the binaries serve tests and local trials, not production (the image recipe,
`patches/Dockerfile`, builds `release-opt`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERIES = REPO / "patches"
ARCHIVE = Path(os.environ.get("TGI_ARCHIVE", REPO.parent / "shared" / "tgi" / "text-generation-inference-3.3.7.tar.gz"))
WORK = Path(os.environ.get("TGI_CSD_WORK") or Path.home() / ".cache" / "tgi-csd") / "tgi-build"
BINARIES = ["text-generation-launcher", "text-generation-router"]
BUILD_VERSION = "4"  # bump when this recipe changes what it builds
CRATES_IO = 'source = "registry+https://github.com/rust-lang/crates.io-index"'
OUTLINES_REV = "ba10c619fc9bf3c487e43f49bdecb95a24bb465c"
#: What this machine needs beyond TGI's own sources, as (file, TGI's text, the build's text, why); each
#: text must be found exactly once. The image recipe (`patches/Dockerfile`) builds TGI's lock unchanged.
ADJUSTMENTS = [
    ("router/Cargo.toml",
     f'outlines-core = {{ git = "https://github.com/dottxt-ai/outlines-core.git", rev = "{OUTLINES_REV}" }}',
     'outlines-core = "=0.1.0"',
     "GitHub is unreachable: outlines-core 0.1.0 from crates.io (commit c0de9e5, the same json_schema::to_regex)"),
    ("Cargo.lock",
     f'source = "git+https://github.com/dottxt-ai/outlines-core.git?rev={OUTLINES_REV}#{OUTLINES_REV}"',
     f'{CRATES_IO}\nchecksum = "1aeac81c3d3ff0ba8f0ab3a919392e4cb53fa965890bf6b31546baecf7019c08"',
     "the same, in the lock"),
    ("Cargo.lock",
     'name = "metrics"\nversion = "0.23.0"\n' + CRATES_IO
     + '\nchecksum = "884adb57038347dfbaf2d5065887b6cf4312330dc8e94bc30a1a839bd79d3261"',
     'name = "metrics"\nversion = "0.23.1"\n' + CRATES_IO
     + '\nchecksum = "3045b4193fbdc5b5681f32f11070da9be3609f189a79f3390706d42587f46bb5"',
     "Rust 1.95 rejects metrics 0.23.0 (rust-lang/rust#141402, E0521); 0.23.1 is that fix, same dependencies"),
]


def series_key() -> str:
    """The archive and the patch series: what the cargo target folder is keyed by."""
    digest = hashlib.sha256(hashlib.sha256(ARCHIVE.read_bytes()).hexdigest().encode())
    for patch in sorted(SERIES.glob("*.patch")):
        digest.update(patch.name.encode() + patch.read_bytes())
    return digest.hexdigest()[:12]


def build_key(series: str) -> str:
    """The series plus this recipe (its adjustments, the build script): what the tree and the binaries are
    keyed by."""
    script = (SERIES / "build-binaries.sh").read_text()
    return hashlib.sha256(f"{series}:{BUILD_VERSION}:{ADJUSTMENTS!r}:{script}".encode()).hexdigest()[:12]


def run(command: list[str], **kwargs) -> None:
    print("$", " ".join(map(str, command)), flush=True)
    subprocess.run(command, check=True, **kwargs)


def unpack() -> Path:
    """The pristine source tree (`<work>/src/text-generation-inference-3.3.7`)."""
    source = WORK / "src"
    tree = source / "text-generation-inference-3.3.7"
    if not (tree / "Cargo.toml").is_file():
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(source, filter="data")
    return tree


def adjust(tree: Path) -> None:
    """Apply `ADJUSTMENTS` (the build stays `--locked`: the lock is edited consistently)."""
    for name, old, new, why in ADJUSTMENTS:
        path = tree / name
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(f"{path}: expected TGI's text once for the adjustment '{why}'")
        path.write_text(text.replace(old, new))
        print(f"adjusted {name}: {why}", flush=True)


def patched_tree(key: str) -> Path:
    """A copy of the source with the series applied, as a git repository (once per key)."""
    tree = WORK / f"tree-{key}"
    if (tree / ".tgi-csd-ready").is_file():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(unpack(), tree, symlinks=True)
    run([sys.executable, "-m", "tgi_csd.cli", "patch", "--tgi-src", str(tree), "--series", str(SERIES)], cwd=REPO)
    adjust(tree)
    git = ["git", "-c", "user.name=tgi-csd", "-c", "user.email=tgi-csd@localhost", "-c", "init.defaultBranch=main"]
    run([*git, "init", "-q"], cwd=tree)
    run([*git, "add", "-A"], cwd=tree)
    run([*git, "commit", "-q", "-m", f"TGI v3.3.7 + tgi-csd patches ({key})"], cwd=tree)
    (tree / ".tgi-csd-ready").write_text(key)
    return tree


def build(series: str) -> Path:
    key = build_key(series)
    bin_dir = WORK / f"bin-{key}"
    if all((bin_dir / name).is_file() for name in BINARIES):
        return bin_dir
    tree = patched_tree(key)
    if shutil.which("protoc") is None:
        sys.exit("protoc is not installed: apt-get install protobuf-compiler (Debian) or set PROTOC")
    target = WORK / f"target-{series}"
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(target),
        "RUSTUP_TOOLCHAIN": os.environ.get("RUSTUP_TOOLCHAIN", "stable"),
        "CARGO_PROFILE_DEV_DEBUG": "0",
        # As in release builds: TGI 3.3.7's launcher and router both declare `-p` for --port and
        # --prometheus-port; clap refuses that at startup only when debug assertions are on.
        "CARGO_PROFILE_DEV_DEBUG_ASSERTIONS": "false",
        "CARGO_PROFILE_DEV_OVERFLOW_CHECKS": "false",
        "CARGO_INCREMENTAL": "0",
        "PYO3_PYTHON": sys.executable,
    }
    started = time.monotonic()
    run(["sh", str(SERIES / "build-binaries.sh")], cwd=tree, env={**env, "PROFILE": "dev"})
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in BINARIES:
        shutil.copy2(target / "debug" / name, bin_dir / name)
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    return bin_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-bin", action="store_true", help="print the binaries' folder if built, else exit 1")
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"{ARCHIVE}: TGI's source archive is missing (set TGI_ARCHIVE)")
    series = series_key()
    if args.print_bin:
        bin_dir = WORK / f"bin-{build_key(series)}"
        if not all((bin_dir / name).is_file() for name in BINARIES):
            sys.exit(1)
        print(bin_dir)
        return
    bin_dir = build(series)
    for name in BINARIES:
        print(bin_dir / name)
    # For the integration suite (`nox -s integration` reads these two lines).
    print(f"TGI_SRC={unpack()}")
    print(f"TGI_CSD_TGI_BIN={bin_dir}")


if __name__ == "__main__":
    main()
