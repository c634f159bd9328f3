"""Cascade config validation: each bad input gets one clear error naming the field."""

import json

import pytest
import yaml

from tgi_csd.config import CascadeConfig, load_config, parse_config
from tgi_csd.errors import ConfigError

GOOD = {
    "target": {"model": "smollm2-135m"},
    "drafters": [
        {"type": "model", "name": "d1", "from_target_layers": 8},
        {"type": "mag"},
    ],
    "k_matrix": [[2, 2], [0, 3]],
}


def with_(**changes):
    return {**GOOD, **changes}


def test_good_config_parses():
    config = parse_config(GOOD)
    assert [d.name for d in config.drafters] == ["d1", "mag"]
    assert config.cpu_kernel == "auto"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (with_(drafters=[{"type": "eagle"}]), "unknown drafter type 'eagle'"),
        (with_(k_matrix=[[2, 2]]), "k_matrix: needs 2 rows"),
        (with_(cpu_kernel="fast"), "cpu_kernel: Input should be 'auto', 'on' or 'off'"),
        (with_(k_matrix=[[2, 2, 1], [0, 3]]), "row 0 has 3 entries"),
        (with_(k_matrix=[[2, -1], [0, 3]]), "negative entry"),
        (with_(k_matrix=[[2, 2], [1, 3]]), "not smaller than the reviewer"),
        (with_(k_matrix=[[0, 2], [0, 3]]), "drafter 'd1' is never used"),
        (with_(drafters=[{"type": "mag"}, {"type": "model", "name": "d1", "from_target_layers": 8}]),
         "model drafters first"),
        (with_(drafters=[{"type": "model", "name": "d1"}, {"type": "mag"}]), "exactly one of `model`"),
        (with_(drafters=[{"type": "model", "name": "d1", "from_target_layers": 0}, {"type": "mag"}]),
         "from_target_layers"),
        (with_(drafters=[{"type": "mag"}, {"type": "mag"}], k_matrix=[[1, 1]]), "names must be unique"),
        (with_(target={"model": "x", "dtype": "int8"}), "target.dtype"),
        (with_(extra=1), "extra"),
        (with_(drafters=[{"type": "model", "name": "d1", "from_target_layers": 8},
                         {"type": "mag", "max_ngram": 4, "lead_ngram": 6}]), "`lead_ngram` 6 exceeds `max_ngram` 4"),
        ({**GOOD, "drafters": [{"type": "model", "name": "d1", "from_target_layers": 8, "leniency": 0.5},
                               {"type": "mag"}]}, "leniency"),
        ({**GOOD, "drafters": [{"type": "model", "name": "d1", "from_target_layers": 8, "min_confidence": 1.0},
                               {"type": "mag"}]}, "min_confidence"),
        ({**GOOD, "drafters": [{"type": "model", "name": "d1", "from_target_layers": 8, "min_confidence": 0.5,
                                "sample": True}, {"type": "mag"}]}, "`min_confidence` applies to greedy drafting"),
    ],
)
def test_bad_configs_raise_one_clear_error(data, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config(data)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert load_config(good).k_matrix == [[2, 2], [0, 3]]


def test_examples_are_valid_and_schema_exports():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.yaml")):
        load_config(path)
    schema = CascadeConfig.model_json_schema()
    assert "k_matrix" in schema["properties"]
    json.dumps(schema)


def test_committed_schema_is_current():
    from pathlib import Path

    committed = Path(__file__).parent.parent / "schemas" / "cascade.schema.json"
    assert json.loads(committed.read_text()) == CascadeConfig.model_json_schema(), (
        "regenerate: tgi-csd config schema --out schemas/cascade.schema.json"
    )
