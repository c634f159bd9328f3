"""The command line: generate prints text and stats; bad input exits 2 with one clear line."""

import json

import yaml
from typer.testing import CliRunner

from helpers import save_tiny_model_dir
from tgi_csd.cli import app

runner = CliRunner()


def write_config(tmp_path, drafters=None, k_matrix=None):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "target": {"model": str(folder)},
        "drafters": drafters if drafters is not None else [{"type": "mag", "bigram": None}],
        "k_matrix": k_matrix or [[4]],
    }))
    return path


def test_generate_json(tmp_path):
    config = write_config(tmp_path)
    result = runner.invoke(app, ["generate", "--config", str(config), "--prompt", "w3 w4 w5", "--max-new-tokens",
                                 "8", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["token_ids"]) <= 8
    assert out["stats"]["target_forwards"] >= 1
    assert "mag->target" in out["stats"]["drafts"]


def test_generate_with_speculation_off_or_a_profile(tmp_path):
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "profiles": {"long": [8]}}))
    outputs = {}
    for choice in ("off", "long", "auto"):
        result = runner.invoke(app, ["generate", "--config", str(config), "--prompt", "w3 w4 w3 w4 w3",
                                     "--max-new-tokens", "8", "--speculation", choice, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["speculation"]["profile"] == choice
        outputs[choice] = out["token_ids"]
        if choice == "off":
            assert out["speculation"]["drafters"] == {} and out["stats"]["drafts"] == {}
    assert outputs["off"] == outputs["long"] == outputs["auto"]


def test_generate_text_and_stats(tmp_path):
    config = write_config(tmp_path)
    result = runner.invoke(app, ["generate", "--config", str(config), "--prompt", "w3 w4", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "tokens per target forward" in result.output


def test_bad_inputs_exit_2_with_the_field(tmp_path):
    config = write_config(tmp_path)
    cases = [
        (["--prompt", "w3", "--speculation", "code"], "--speculation"),
        (["--prompt", "", "--max-new-tokens", "4"], "--prompt"),
        (["--prompt", "w3", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["--prompt", "w3", "--temperature", "-1"], "--temperature"),
    ]
    for args, field in cases:
        result = runner.invoke(app, ["generate", "--config", str(config), *args])
        assert result.exit_code == 2, result.output
        assert f"error: {field}" in result.output


def test_bad_config_exits_2(tmp_path):
    config = write_config(tmp_path, drafters=[{"type": "medusa"}], k_matrix=[[4]])
    result = runner.invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2
    assert "unknown drafter type 'medusa'" in result.output
    result = runner.invoke(app, ["generate", "--config", str(tmp_path / "none.yaml"), "--prompt", "w3"])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_schema_and_bigram_build(tmp_path):
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0 and "k_matrix" in json.loads(result.stdout)["properties"]
    folder = save_tiny_model_dir(tmp_path / "tiny")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w3 w4 w3 w4 w5")
    out = tmp_path / "b.safetensors"
    result = runner.invoke(app, ["bigram", "build", "--tokenizer", str(folder), "--corpus", str(corpus),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    from tgi_csd.drafters.bigram import BigramTable
    from tgi_csd.models import load_tokenizer

    assert BigramTable.load(out, load_tokenizer(folder))[3] == 4
    result = runner.invoke(app, ["bigram", "build", "--tokenizer", str(folder), "--corpus", str(tmp_path / "no.txt"),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "--corpus" in result.output
