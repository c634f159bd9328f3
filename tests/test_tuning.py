"""`tgi-csd tune`: the default grid, a tiny-model run that writes a valid config holding a grid point
under a header with the measured figures, and bad input exiting 2 naming the option."""

import re

import pytest
import yaml
from typer.testing import CliRunner

from helpers import TINY_CHAT_TEMPLATE, tiny_cascade_config
from tgi_csd.bench.ksweep import label
from tgi_csd.bench.tuning import MAX_DEFAULT_POINTS, default_cells, entry_values
from tgi_csd.cli import app
from tgi_csd.config import parse_config

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny target with a 2-layer cut drafter and MaG, an adaptive section (dropped when tuned), two prompts."""
    folder = tmp_path_factory.mktemp("tune")
    config = tiny_cascade_config(folder, adaptive={})
    prompts = folder / "prompts.txt"
    prompts.write_text("w3 w4 w5 w3 w4 w5 w6\nw7 w8 w9 w10 w7 w8\n")
    return folder, config, prompts


def tune(config, prompts, out, *extra):
    return runner.invoke(app, ["tune", "--config", str(config), "--prompts", str(prompts), "--limit", "2",
                               "--max-new-tokens", "8", "--repeats", "1", "--out", str(out), *extra])


def test_default_grid_tries_each_positive_entry_up_to_its_value():
    assert default_cells([[8]]) == [[list(range(1, 9))]]
    assert default_cells([[2, 2], [0, 3]]) == [[[1, 2], [1, 2]], [[0], [1, 2, 3]]]
    assert entry_values(0, True) == [0] and entry_values(0, False) == [0]
    assert entry_values(8, False) == [1, 2, 4, 8] and entry_values(6, False) == [1, 2, 4, 6]
    big = default_cells([[4, 4, 4], [0, 4, 4], [0, 0, 4]])  # 4^6 full points: too many
    assert MAX_DEFAULT_POINTS < 4**6 and big[0] == [[1, 2, 4]] * 3 and big[2] == [[0], [0], [1, 2, 4]]


def test_tune_writes_the_fastest_exact_grid_point_into_a_copy_of_the_config(setup):
    folder, config, prompts = setup
    grid = folder / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": [[[1, 2], 2], [0, [0, 3]]]}))
    out = folder / "tuned.yaml"
    result = tune(config, prompts, out, "--grid", str(grid), "--batch-size", "2")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    tuned = parse_config(yaml.safe_load(text))
    assert tuned.k_matrix in [[[a, 2], [0, b]] for a in (1, 2) for b in (0, 3)]
    assert tuned.adaptive is None and tuned.drafters == parse_config(yaml.safe_load(config.read_text())).drafters
    header = [line for line in text.splitlines() if line.startswith("#")]
    best = next(line for line in header if line.startswith("# best:"))
    assert re.fullmatch(rf"# best: +{re.escape(label(tuned.k_matrix))}: [\d.]+ tok/s median \([\d.]+x nospec\)", best)
    assert re.search(r"^# runner-up: +csd\[.*\]: [\d.]+ tok/s median", text, re.MULTILINE)
    assert re.search(r"^# nospec: +[\d.]+ tok/s median", text, re.MULTILINE)
    assert f"# command: tgi-csd tune --config {config} --prompts {prompts} --grid {grid}" in text
    assert "4 tried" in text and "batch size 2" in text and "`adaptive` section is dropped" in text
    assert "★" in result.output and "nospec" in result.output


def test_tune_on_chat_prompts_records_chat_in_its_command(tmp_path):
    config = tiny_cascade_config(tmp_path, chat_template=TINY_CHAT_TEMPLATE)
    prompts = tmp_path / "questions.txt"
    prompts.write_text("w3 w4 w5 w3 w4\nw7 w8 w7 w8\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": [[1, 2], [0, 3]]}))
    out = tmp_path / "tuned.yaml"
    result = tune(config, prompts, out, "--grid", str(grid), "--chat")
    assert result.exit_code == 0, result.output
    assert f"# command: tgi-csd tune --config {config} --prompts {prompts} --chat --grid {grid}" in out.read_text()


def test_bad_inputs_exit_2_naming_the_option(setup, tmp_path):
    _, config, prompts = setup
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    bad_grid = tmp_path / "grid.yaml"
    bad_grid.write_text("grid: [[1, 2]]\n")
    unused = tmp_path / "unused.yaml"
    unused.write_text("grid: [[1, 0], [0, 0]]\n")  # MaG never used: no valid point
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"target": {"model": "x"}, "drafters": [], "k_matrix": [[]]}))
    cases = [
        (["--config", str(tmp_path / "missing.yaml")], "--config: cannot read"),
        (["--config", str(plain)], "--config: "),
        (["--prompts", str(empty)], "--prompts:"),
        (["--prompts", str(tmp_path / "missing.txt")], "--prompts: cannot read"),
        (["--grid", str(bad_grid)], "--grid:"),
        (["--grid", str(unused)], "--grid: no point"),
        (["--limit", "0"], "--limit:"),
        (["--batch-size", "0"], "--batch-size:"),
        (["--repeats", "0"], "--repeats:"),
        (["--out", str(tmp_path / "tuned.txt")], "--out:"),
        (["--chat"], "--chat: the model's tokenizer has no chat template"),
    ]
    for args, message in cases:
        base = ["tune", "--config", str(config), "--prompts", str(prompts), "--out", str(tmp_path / "t.yaml")]
        result = runner.invoke(app, base + args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {message}" in result.output, (args, result.output)
    assert not (tmp_path / "t.yaml").exists()
