"""Per-request speculation: `off`, `auto` and configured profiles share one batch; outputs never change."""

import pytest
import yaml

from helpers import StubTokenizer, hf_greedy, tiny_llama
from tgi_csd.adaptive import RowPace
from tgi_csd.builder import ModelLevel
from tgi_csd.config import parse_config
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.drafting import RequestDrafts
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError, RequestError
from tgi_csd.models import cut_from_target
from tgi_csd.runner import ModelRunner

PROMPTS = [[3, 9, 4, 1, 7, 3, 9, 4], [12, 5, 5, 30, 12, 5], [40, 2, 8, 8, 8, 1, 6, 40, 2], [21, 22, 21, 22]]
PROFILES = {"mag-only": [0, 0, 5], "big-only": [3, 0, 0]}


def engine(target, adaptive=None) -> Engine:
    big = ModelLevel("big", ModelRunner(cut_from_target(target, 3), "big"))
    small = ModelLevel("small", ModelRunner(cut_from_target(target, 1), "small"))
    return Engine.assemble(ModelRunner(target, "target"), [big, small, MaGDrafter(None)],
                           [[2, 1, 2], [0, 2, 1], [0, 0, 3]], StubTokenizer(), profiles=PROFILES, adaptive=adaptive)


@pytest.mark.parametrize("adaptive", [None, "adaptive"])
def test_a_mixed_batch_of_off_auto_and_profiles_is_exact_and_reports_per_request(adaptive):
    from tgi_csd.config import AdaptiveSettings

    target = tiny_llama(vocab=64, layers=4, init=0.4)
    choices = ["off", "auto", "mag-only", "big-only"] * 2
    # `off` rows are shorter: a batch that drains ends with its slowest row, and one at a token a step as long as
    # the others would leave the controllers no reason to speculate
    tokens = {c: 8 if c == "off" else 16 for c in choices}
    requests = [Request(prompt_ids=PROMPTS[i % 4], max_new_tokens=tokens[c], speculation=c)
                for i, c in enumerate(choices)]
    run = engine(target, AdaptiveSettings() if adaptive else None)
    results = sorted(run.generate(requests), key=lambda r: r.id)
    for request, result in zip(requests, results):
        n = request.max_new_tokens
        assert result.token_ids == hf_greedy(target, request.prompt_ids, n), request.speculation
        report = result.speculation
        assert report["profile"] == request.speculation
        assert report["target_forwards"] >= 1
        assert report["tokens_per_target_forward"] == round(n / report["target_forwards"], 3)
        drafters = set(report["drafters"])
        if request.speculation == "off":
            assert drafters == set() and report["target_forwards"] == n  # prefill + one token a step
        elif request.speculation == "mag-only":
            assert drafters <= {"mag"}
        elif request.speculation == "big-only":
            assert drafters <= {"big"}
    stats = run.stats
    assert dict(stats.profile_requests) == {"off": 2, "auto": 2, "mag-only": 2, "big-only": 2}
    for (profile, drafter), pair in stats.profile_pairs.items():
        assert profile != "off" and pair.accepted <= pair.proposed
        per_request = sum(r.speculation["drafters"].get(drafter, {}).get("proposed", 0)
                          for r in results if r.speculation["profile"] == profile)
        assert pair.proposed == per_request
    assert sum(p.proposed for (profile, _), p in stats.profile_pairs.items() if profile != "off") > 0


def test_an_unknown_profile_is_refused_naming_the_choices():
    run = engine(tiny_llama(vocab=64, layers=4))
    with pytest.raises(RequestError, match=r"speculation: unknown profile 'code'; choose one of auto, off, "
                                           r"mag-only, big-only"):
        run.add_request(Request(prompt_ids=[1, 2], speculation="code"))
    assert not run.has_work()


def test_profiles_in_the_config():
    base = {"target": {"model": "x"}, "drafters": [{"type": "mag", "bigram": None}], "k_matrix": [[4]]}
    config = parse_config({**base, "profiles": {"code": [8], "short": [1]}}, "test")
    assert config.speculation_choices() == ["auto", "off", "code", "short"]
    for profiles, message in [({"off": [2]}, "'off' is not a profile name"),
                              ({"a b": [2]}, "'a b' is not a profile name"),
                              ({"code": [2, 1]}, r"profiles.code: \[2, 1\] needs 1 entries >= 0")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, "profiles": profiles}, "test")
    yaml.safe_dump(config.model_dump())  # round-trips


def test_a_rows_pace_is_measured_against_its_peers_not_the_drafter():
    """Rows whose drafts all fail keep the pool's pace (the drafter is bad, not the rows); a row that gains
    nothing where its peer gains a whole draft falls behind it; a lone row is measured against what rows
    typically gained from as many positions (or fewer)."""
    session = engine(tiny_llama(vocab=64, layers=4)).session
    for request_id in (1, 2):
        session.requests[request_id] = RequestDrafts("auto")
    session._pace("auto", [(1, 4, 0), (2, 4, 0)])
    assert [session.requests[i].pace(10).factor for i in (1, 2)] == [1.0, 1.0]
    session._pace("auto", [(1, 4, 4), (2, 4, 0)])
    fast, slow = (session.requests[i].pace(10).factor for i in (1, 2))
    assert slow < 1.0 < fast
    session._pace("auto", [(2, 6, 0)])
    assert session.requests[2].pace(10).factor < slow, "alone, measured against the typical gain of 4 positions"
    assert RequestDrafts("off").pace(10) == RowPace(10, 0.0), "an `off` row goes at one token a step"
