"""`tgi-csd patch`: apply the `patches/` series (git format-patch files, TGI v3.3.7) to a TGI tree or to
an installed `text_generation_server`.

No git needed (the official TGI image may have none): each file's state is told by its git blob id,
which every patch records (`index <old>..<new>`). A file whose blob is a patch's pre-image gets that
patch; one already at the post-image is skipped (so re-running is a no-op); anything else means a
different TGI version, and nothing is written. After applying, every file is checked against the
post-image blob id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer

from tgi_csd.errors import ConfigError

TGI_VERSION = "v3.3.7"
TGI_COMMIT = "dfb3fbe78e0d1d69251bd33065591c61bafdfaa8"
SERVER_PREFIX = "server/text_generation_server/"
PATCHES_ENV = "TGI_CSD_PATCHES"


@dataclass
class Hunk:
    old_start: int
    lines: list[str]  # each starts with ' ', '-' or '+'


@dataclass
class FileDiff:
    path: str
    old_blob: str  # abbreviated; all zeros for a new file
    new_blob: str
    hunks: list[Hunk] = field(default_factory=list)
    patch: str = ""

    @property
    def is_new(self) -> bool:
        return set(self.old_blob) == {"0"}


def blob_id(data: bytes) -> str:
    """The git blob id of `data` (what `index a..b` lines abbreviate)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str, name: str = "patch") -> list[FileDiff]:
    """The per-file diffs of one `git format-patch` file."""
    diffs: list[FileDiff] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            path = line.split(" b/", 1)[1]
            diff = FileDiff(path, "", "", patch=name)
            diffs.append(diff)
        elif line.startswith("index ") and diffs and not diffs[-1].old_blob:
            old, new = line.split()[1].split("..")
            diffs[-1].old_blob, diffs[-1].new_blob = old, new
        elif line.startswith("@@ ") and diffs:
            match = _HUNK.match(line)
            if not match:
                raise ConfigError(f"{name}: cannot read hunk header {line!r}")
            old_count = int(match.group(2) if match.group(2) is not None else 1)
            new_count = int(match.group(4) if match.group(4) is not None else 1)
            hunk = Hunk(int(match.group(1)), [])
            i += 1
            while (old_count > 0 or new_count > 0) and i < len(lines):
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    i += 1
                    continue
                tag = body[:1] or " "
                hunk.lines.append(tag + body[1:])
                if tag in " -":
                    old_count -= 1
                if tag in " +":
                    new_count -= 1
                i += 1
            diffs[-1].hunks.append(hunk)
            continue
        elif line == "-- " and diffs:  # format-patch signature: the patch ended
            break
        i += 1
    for diff in diffs:
        if not diff.old_blob:
            raise ConfigError(f"{name}: {diff.path} has no `index` line; regenerate the series with git format-patch")
    return diffs


def apply_hunks(text: str, hunks: list[Hunk], where: str) -> str:
    """Apply hunks to `text` (no fuzz: the pre-image was verified by its blob id)."""
    lines = text.split("\n")
    out: list[str] = []
    pos = 0
    for hunk in hunks:
        start = max(hunk.old_start - 1, 0) if any(ln[0] in " -" for ln in hunk.lines) else hunk.old_start
        out.extend(lines[pos:start])
        pos = start
        for line in hunk.lines:
            tag, body = line[0], line[1:]
            if tag in " -":
                if pos >= len(lines) or lines[pos] != body:
                    raise ConfigError(f"{where}: hunk at line {hunk.old_start} does not match")
                pos += 1
            if tag in " +":
                out.append(body)
    out.extend(lines[pos:])
    return "\n".join(out)


def default_series_dir() -> Path:
    """`$TGI_CSD_PATCHES`, else the checkout's `patches/`, else the copy a wheel installs under
    `<prefix>/share/tgi-csd/patches`."""
    env = os.environ.get(PATCHES_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "patches"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "tgi-csd" / "patches"


def load_series(folder: Path) -> list[tuple[str, list[FileDiff]]]:
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]-*.patch"))
    if not files:
        raise ConfigError(f"--series: no NNNN-*.patch files in {folder}; pass the tgi-csd `patches/` folder "
                          f"(or set {PATCHES_ENV})")
    return [(p.name, parse_patch(p.read_text(), p.name)) for p in files]


@dataclass
class Plan:
    """What applying the series to one tree does: per target file, the diffs still to apply."""

    pending: dict[Path, list[FileDiff]]
    done: list[Path]
    skipped: list[str]  # series paths outside an installed server


def plan(series: list[tuple[str, list[FileDiff]]], root: Path, installed: bool) -> Plan:
    chains: dict[str, list[FileDiff]] = {}
    skipped: list[str] = []
    for _, diffs in series:
        for diff in diffs:
            if installed and not diff.path.startswith(SERVER_PREFIX):
                if diff.path not in skipped:
                    skipped.append(diff.path)
                continue
            chains.setdefault(diff.path, []).append(diff)
    pending: dict[Path, list[FileDiff]] = {}
    done: list[Path] = []
    foreign: list[str] = []
    for path, chain in chains.items():
        target = root / (path[len(SERVER_PREFIX):] if installed else path)
        blob = blob_id(target.read_bytes()) if target.is_file() else None
        applied = None
        if blob is None:
            applied = 0 if chain[0].is_new else None
        else:
            for count, diff in enumerate(chain):
                if not diff.is_new and blob.startswith(diff.old_blob):
                    applied = count
                    break
            if blob.startswith(chain[-1].new_blob):
                applied = len(chain)
        if applied is None:
            state = "missing" if blob is None else f"blob {blob[:10]}"
            foreign.append(f"{target} ({state})")
        elif applied == len(chain):
            done.append(target)
        else:
            pending[target] = chain[applied:]
    if foreign:
        raise ConfigError(
            f"these patches are for TGI {TGI_VERSION} (commit {TGI_COMMIT[:8]}); {describe(root, installed)} differs: "
            f"{'; '.join(foreign)} match neither the {TGI_VERSION} original nor the patched file. Check out tag "
            f"{TGI_VERSION} (git checkout {TGI_VERSION}) or use the image built from it"
        )
    return Plan(pending, done, skipped)


def describe(root: Path, installed: bool) -> str:
    if installed:
        return f"the installed text_generation_server at {root}"
    cargo = root / "Cargo.toml"
    version = ""
    if cargo.is_file():
        match = re.search(r'^version = "([^"]+)"', cargo.read_text(), re.M)
        version = f" (Cargo.toml version {match.group(1)})" if match else ""
    return f"the TGI tree at {root}{version}"


def apply_plan(result: Plan) -> None:
    """Write every pending file (all checked in memory first: nothing is written if one fails)."""
    staged: dict[Path, bytes] = {}
    for target, chain in result.pending.items():
        text = target.read_text() if target.is_file() else ""
        for diff in chain:
            text = apply_hunks(text, diff.hunks, f"{diff.patch}: {target}")
            if not blob_id(text.encode()).startswith(diff.new_blob):
                raise ConfigError(f"{diff.patch}: {target} does not come out as the patched file "
                                  f"(blob {diff.new_blob}); the series or the tree is damaged")
        staged[target] = text.encode()
    for target, data in staged.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def installed_server() -> Path:
    """The folder of the installed `text_generation_server` (found without importing it: its
    import needs ATTENTION and friends set)."""
    spec = importlib.util.find_spec("text_generation_server")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("--installed: text_generation_server is not installed in this Python environment "
                          "(run tgi-csd with the Python that runs TGI's shard)")
    return Path(next(iter(spec.submodule_search_locations)))


def run_patch(tgi_src: Path | None, installed: bool, check: bool, series_dir: Path | None = None) -> str:
    """Apply (or with `check`, only test) the series; returns the report text."""
    if (tgi_src is None) == (not installed):
        raise ConfigError("pass exactly one of --tgi-src DIR (a TGI source tree) or --installed (the "
                          "text_generation_server package of this Python)")
    if installed:
        root = installed_server()
    else:
        root = Path(tgi_src).expanduser()
        if not (root / "server" / "text_generation_server").is_dir():
            raise ConfigError(f"--tgi-src: {root} is not a TGI source tree (no server/text_generation_server)")
    series = load_series(series_dir or default_series_dir())
    result = plan(series, root, installed)
    names = ", ".join(name for name, _ in series)
    lines = [f"{describe(root, installed)}: series {names}"]
    if result.skipped:
        lines.append(f"not part of an installed server (skipped): {', '.join(result.skipped)}")
    if not result.pending:
        lines.append(f"already applied ({len(result.done)} files patched)")
        return "\n".join(lines)
    if check:
        # Dry run in memory: raises if a hunk does not fit.
        for target, chain in result.pending.items():
            text = target.read_text() if target.is_file() else ""
            for diff in chain:
                text = apply_hunks(text, diff.hunks, f"{diff.patch}: {target}")
        lines.append(f"would patch {len(result.pending)} files ({len(result.done)} already patched): "
                     + ", ".join(str(p.relative_to(root)) for p in result.pending))
        return "\n".join(lines)
    apply_plan(result)
    lines.append(f"patched {len(result.pending)} files ({len(result.done)} were already patched)")
    if not installed:
        lines.append("next: regenerate the gRPC stubs (cd server && make gen-server-raw), rebuild the launcher/router, "
                     "reinstall the server")
    return "\n".join(lines)


def patch_command(
    tgi_src: Path | None = typer.Option(None, "--tgi-src", help=f"a TGI {TGI_VERSION} source tree to patch"),
    installed: bool = typer.Option(
        False, "--installed", help="patch the text_generation_server installed in this Python (server files only)"
    ),
    check: bool = typer.Option(False, "--check", help="only report whether the series applies; change nothing"),
    series: Path | None = typer.Option(None, "--series", help=f"the patches folder (default: ${PATCHES_ENV} or the "
                                       "`patches/` folder next to the tgi_csd package)"),
) -> None:
    """Apply tgi-csd's TGI patches (speculation strategy seam, launcher flags, /info) to a TGI v3.3.7 tree."""
    try:
        typer.echo(run_patch(tgi_src, installed, check, series))
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
