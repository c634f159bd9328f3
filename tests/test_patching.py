"""`tgi-csd patch`: the applier on a synthetic series, and the real series on a TGI v3.3.7 tree (`TGI_SRC`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgi_csd import patching
from tgi_csd.cli import app
from tgi_csd.errors import ConfigError
from tgi_csd.patching import blob_id, load_series, run_patch

SERIES = Path(__file__).resolve().parent.parent / "patches"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def synthetic(tmp_path):
    """A tiny 'TGI' tree at its original state, and a two-patch series made from it by git format-patch."""
    repo = tmp_path / "repo"
    server = repo / "server" / "text_generation_server"
    server.mkdir(parents=True)
    (repo / "Cargo.toml").write_text('[workspace]\nversion = "9.9.9"\n')
    (server / "a.py").write_text("".join(f"line {i}\n" for i in range(40)))
    (repo / "launcher.rs").write_text("fn main() {\n    run();\n}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    pristine = tmp_path / "pristine"
    shutil.copytree(repo, pristine, ignore=shutil.ignore_patterns(".git"))
    text = (server / "a.py").read_text().replace("line 3\n", "line 3\nadded A\n").replace("line 30\n", "")
    (server / "a.py").write_text(text)
    (server / "new.py").write_text("NEW = 1\n\nNOT_LAST = 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "server")
    (server / "a.py").write_text(text.replace("line 39\n", "line 39\nappended\n"))
    (repo / "launcher.rs").write_text("fn main() {\n    strategy();\n    run();\n}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "launcher")
    series = tmp_path / "series"
    git(repo, "format-patch", "-q", "--zero-commit", "-o", str(series), "HEAD~2..HEAD")
    return pristine, repo, series


def tree_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()
            and ".git" not in p.parts}


@needs_git
def test_series_applies_then_is_a_no_op(synthetic):
    pristine, patched, series = synthetic
    before = tree_files(pristine)
    report = run_patch(pristine, installed=False, check=True, series_dir=series)
    assert "would patch 3 files" in report
    assert tree_files(pristine) == before  # --check writes nothing
    assert "patched 3 files" in run_patch(pristine, installed=False, check=False, series_dir=series)
    assert tree_files(pristine) == tree_files(patched)
    assert "already applied (3 files patched)" in run_patch(pristine, installed=False, check=False, series_dir=series)
    assert "already applied" in run_patch(pristine, installed=False, check=True, series_dir=series)


@needs_git
def test_half_applied_tree_gets_the_rest(synthetic):
    pristine, patched, series = synthetic
    # The first patch alone (a.py at its intermediate state, new.py present).
    first = load_series(series)[:1]
    result = patching.plan(first, pristine, installed=False)
    patching.apply_plan(result)
    assert "patched 2 files (1 were already patched)" in run_patch(pristine, False, False, series)
    assert tree_files(pristine) == tree_files(patched)


@needs_git
def test_other_version_is_refused_and_nothing_is_written(synthetic):
    pristine, _, series = synthetic
    a = pristine / "server" / "text_generation_server" / "a.py"
    a.write_text(a.read_text() + "something else\n")
    before = tree_files(pristine)
    with pytest.raises(ConfigError) as error:
        run_patch(pristine, installed=False, check=False, series_dir=series)
    message = str(error.value)
    assert "these patches are for TGI v3.3.7" in message
    assert "a.py" in message and "Cargo.toml version 9.9.9" in message
    assert tree_files(pristine) == before


@needs_git
def test_installed_mode_patches_only_the_server_package(synthetic, monkeypatch):
    pristine, patched, series = synthetic
    package = pristine / "server" / "text_generation_server"
    monkeypatch.setattr(patching, "installed_server", lambda: package)
    report = run_patch(None, installed=True, check=False, series_dir=series)
    assert "skipped): launcher.rs" in report
    assert (package / "a.py").read_text() == (patched / "server/text_generation_server/a.py").read_text()
    assert (package / "new.py").is_file()
    assert (pristine / "launcher.rs").read_text() == "fn main() {\n    run();\n}\n"
    assert "already applied" in run_patch(None, installed=True, check=False, series_dir=series)


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of --tgi-src"):
        run_patch(None, installed=False, check=False)
    with pytest.raises(ConfigError, match="is not a TGI source tree"):
        run_patch(tmp_path, installed=False, check=False)
    (tmp_path / "server" / "text_generation_server").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no NNNN-\\*.patch files"):
        run_patch(tmp_path, installed=False, check=False, series_dir=tmp_path)


def test_blob_id_is_gits():
    assert blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_shipped_series_parses():
    series = load_series(SERIES)
    assert [name[:4] for name, _ in series] == [f"{i:04d}" for i in range(1, len(series) + 1)]
    paths = [d.path for _, diffs in series for d in diffs]
    assert "server/text_generation_server/models/flash_causal_lm.py" in paths
    assert "server/text_generation_server/utils/speculation_strategy.py" in paths


# -- the real series on a TGI v3.3.7 source tree -------------------------------------------------------
TGI_SRC = os.environ.get("TGI_SRC")
needs_tgi = pytest.mark.skipif(
    not TGI_SRC, reason="set TGI_SRC to a clean TGI v3.3.7 source tree (git archive v3.3.7) to test the real series")


@pytest.fixture
def tgi_copy(tmp_path):
    """The files the series touches (plus the markers the command looks for), copied from TGI_SRC."""
    src, dst = Path(TGI_SRC), tmp_path / "tgi"
    (dst / "server" / "text_generation_server").mkdir(parents=True)
    shutil.copy(src / "Cargo.toml", dst / "Cargo.toml")
    for _, diffs in load_series(SERIES):
        for diff in diffs:
            if (src / diff.path).is_file():
                (dst / diff.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / diff.path, dst / diff.path)
    return dst


@needs_tgi
def test_real_series_on_v337(tgi_copy):
    runner = CliRunner()
    check = runner.invoke(app, ["patch", "--tgi-src", str(tgi_copy), "--check"])
    assert check.exit_code == 0, check.output
    assert "would patch" in check.output
    applied = runner.invoke(app, ["patch", "--tgi-src", str(tgi_copy)])
    assert applied.exit_code == 0, applied.output
    again = runner.invoke(app, ["patch", "--tgi-src", str(tgi_copy)])
    assert again.exit_code == 0 and "already applied" in again.output
    seam = (tgi_copy / "server/text_generation_server/models/flash_causal_lm.py").read_text()
    assert "speculation_strategy.propose(" in seam


@needs_tgi
@needs_git
def test_git_apply_check_of_the_whole_series(tgi_copy):
    git(tgi_copy, "init", "-q")
    out = subprocess.run(["git", "apply", "--check", "-v", *sorted(map(str, SERIES.glob("*.patch")))],
                         cwd=tgi_copy, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@needs_tgi
def test_real_series_refuses_a_changed_tree(tgi_copy):
    target = tgi_copy / "server/text_generation_server/server.py"
    target.write_text(target.read_text().replace("ClearCache", "ClearKache", 1))
    result = CliRunner().invoke(app, ["patch", "--tgi-src", str(tgi_copy), "--check"])
    assert result.exit_code == 2
    assert "these patches are for TGI v3.3.7" in result.output and "server.py" in result.output
