"""One construction path: the engine, the bench (and so tune) and the TGI strategy build a config's drafters
the same way, so every key means the same everywhere."""

from types import SimpleNamespace

import pytest
import yaml

from helpers import tiny_cascade_config
from tgi_csd.adaptive import ShapeCost
from tgi_csd.bench.loading import BenchModels
from tgi_csd.builder import DrafterAssets, build_session
from tgi_csd.config import load_config
from tgi_csd.drafters.model import ModelDrafter
from tgi_csd.engine import Engine
from tgi_csd.errors import ConfigError
from tgi_csd.kv_cache import BudgetedKVCache
from tgi_csd.models import load_tokenizer
from tgi_csd.plugin.manager import StrategyManager


def kv_caches(drafters) -> list[tuple[str, str, int | None]]:
    return [(d.name, type(d.runner.cache).__name__, getattr(d.runner.cache, "budget_bytes", None))
            for d in drafters if isinstance(d, ModelDrafter)]


def test_the_drafter_kv_budget_caps_drafters_in_the_engine_the_bench_and_tgi(tmp_path):
    path = tiny_cascade_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "drafter_kv_budget_mb": 0.05}))
    config = load_config(path)
    engine = Engine.from_config(config)
    bench = BenchModels(config).engine(config)
    tgi = StrategyManager().create("csd", speculate=4, tokenizer=load_tokenizer(tmp_path / "tiny"), config=str(path),
                                   model_id=str(tmp_path / "tiny"), vocab_size=64)
    caches = kv_caches(engine.drafters)
    assert caches == [("half", "BudgetedKVCache", caches[0][2])]
    assert 0 < caches[0][2] <= 0.05 * 2**20
    assert kv_caches(bench.drafters) == caches
    assert kv_caches(tgi.strategy.session.drafters) == caches
    assert isinstance(engine.drafters[0].runner.cache, BudgetedKVCache)


def test_an_unknown_drafter_spec_is_a_config_error_everywhere(tmp_path):
    config = load_config(tiny_cascade_config(tmp_path))
    stranger = SimpleNamespace(name="odd")
    with pytest.raises(ConfigError, match="drafters.odd: unknown drafter type"):
        DrafterAssets.load([stranger], None, None, "float32", 64)
    odd = config.model_copy(update={"drafters": [*config.drafters[:1], stranger]})
    assets = DrafterAssets.load(config.drafters, Engine.from_config(config).target.model, None, "float32", 64)
    with pytest.raises(ConfigError, match="drafters.odd: unknown drafter type"):
        build_session(odd, assets, 64, target_cost=ShapeCost())


def test_model_drafters_are_built_complete(tmp_path):
    """Each model drafter gets the cascade below it at construction: its own k-matrix row."""
    engine = Engine.from_config(load_config(tiny_cascade_config(tmp_path)))
    half, _ = engine.drafters
    assert half.below is not None and [(d.name, k) for d, k in half.below.segments] == [("mag", 3)]
    assert [(d.name, k) for d, k in engine.top.segments] == [("half", 2), ("mag", 2)]
