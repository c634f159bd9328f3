"""scripts/workload_shift.py on a tiny model: two phases through nospec, static and adaptive engines
write shift.json (per-step records, per-phase summaries, outputs equal to no speculation's) and shift.png;
bad input returns 2 naming the option."""

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import tiny_cascade_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "workload_shift.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shift():
    spec = importlib.util.spec_from_file_location("workload_shift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny target with a cut drafter and MaG (eager adaptive settings), code-like and chat-like prompts."""
    folder = tmp_path_factory.mktemp("shift")
    eager = {"warmup_steps": 0, "hold_steps": 1, "probe_every": 2, "probe_budget": 1.0}
    config = tiny_cascade_config(folder, adaptive=eager)
    code = folder / "code.txt"
    code.write_text("w3 w4 w5 w3 w4 w5 w6\nw7 w8 w9 w10 w7 w8\nw20 w21\n")
    chat = folder / "chat.jsonl"
    chat.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["w30 w31 w32", "w40 w41 w40 w41", "w50"]))
    return folder, config, code, chat


def test_smoke_run_writes_shift_json_and_png(shift, setup):
    folder, config, code, chat = setup
    out = folder / "out"
    status = shift.main(["--config", str(config), "--code-prompts", str(code), "--chat-prompts", str(chat),
                         "--limit", "3", "--max-new-tokens", "6", "--batch-size", "2", "--window", "4",
                         "--threads", "1", "--out", str(out)])
    assert status == 0
    assert (out / "shift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "shift.json").read_text())
    assert data["settings"]["prompts"] == {"code": 3, "chat": 3}
    assert data["settings"]["adaptive"]["probe_every"] == 2
    assert data["differences_vs_nospec"] == {name: {"code": 0, "chat": 0} for name in ("nospec", "static", "adaptive")}
    for name in ("nospec", "static", "adaptive"):
        steps = data["steps"][name]
        phases = [s["phase"] for s in steps]
        assert phases == sorted(phases, key=["code", "chat"].index) and set(phases) == {"code", "chat"}, name
        assert all(1 <= s["rows"] <= 2 and s["seconds"] > 0 for s in steps), name
        summary = {s["phase"]: s for s in data["summary"][name]}
        for phase in ("code", "chat"):
            assert summary[phase]["tokens"] == sum(s["tokens"] for s in steps if s["phase"] == phase) == 3 * 6
            assert summary[phase]["tokens_per_s"] > 0
    adaptive = [s for s in data["steps"]["adaptive"] if not s["admit"]]
    assert all(set(s["k"]) == {"half", "mag"} and all(0 <= k <= 2 for k in s["k"].values()) for s in adaptive)
    assert any(s["off"] for s in adaptive) and any(not s["off"] for s in adaptive)
    assert any(s["window_acceptance"] for s in adaptive)
    static = [s for s in data["steps"]["static"] if not s["admit"]]
    assert all(s["k"] == {"half": 2, "mag": 2} and not s["off"] and s["window_acceptance"] is None for s in static)


def test_bad_input_returns_2_naming_the_option(shift, setup, tmp_path, capsys):
    _, config, code, chat = setup
    base = ["--config", str(config), "--code-prompts", str(code), "--chat-prompts", str(chat), "--out", str(tmp_path)]
    cases = [
        (["--limit", "0"], "--limit:"),
        (["--chat-prompts", str(tmp_path / "missing.jsonl")], "--chat-prompts: cannot read"),
        (["--config", str(tmp_path / "missing.yaml")], "--config: cannot read"),
    ]
    for args, message in cases:
        assert shift.main(base + args) == 2, args
        assert f"error: {message}" in capsys.readouterr().err, args
