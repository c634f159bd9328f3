"""`tgi-csd distill` on a tiny model: adapter folder, metadata binding, resume, reduced heads, bad inputs."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from helpers import TINY_CHAT_TEMPLATE, save_tiny_model_dir
from tgi_csd.adapters import ReducedHead, read_metadata
from tgi_csd.cli import app
from tgi_csd.config import parse_config
from tgi_csd.distill.data import Example
from tgi_csd.distill.pipeline import run
from tgi_csd.distill.train import DistillSettings, acceptance
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError

FAST = {"steps": 6, "batch_size": 4, "new_tokens": 6, "eval_every": 3, "checkpoint_every": 3, "rank": 4}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    save_tiny_model_dir(root / "tiny")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(" ".join(f"w{(i * 7 + j) % 60 + 2}" for j in range(6)) for i in range(10)))
    return root


@pytest.fixture(scope="module")
def adapter(workspace):
    report = run(str(workspace / "tiny"), "layers:2", [str(workspace / "prompts.txt")], workspace / "lora",
                 DistillSettings(**FAST))
    return workspace / "lora", report


def test_adapter_folder_and_report(adapter):
    folder, report = adapter
    assert (folder / "adapter_model.safetensors").is_file()
    assert read_metadata(folder).from_target_layers == 2
    saved = json.loads((folder / "distill_report.json").read_text())
    assert saved["after"] == report["after"] and len(saved["history"]) == 2
    assert {"agreement", "accepted_k4", "accepted_k8"} <= set(report["before"])
    assert saved["peak_rss_mb"] > 0 and saved["wall_seconds"] > 0


def config_with(workspace, adapter_folder, layers=2):
    return parse_config({
        "target": {"model": str(workspace / "tiny")},
        "drafters": [{"type": "model", "name": "d", "from_target_layers": layers, "adapter": str(adapter_folder)},
                     {"type": "mag", "bigram": None}],
        "k_matrix": [[3, 1], [0, 2]],
    })


def test_engine_loads_adapter_and_outputs_stay_exact(workspace, adapter):
    engine = Engine.from_config(config_with(workspace, adapter[0]))
    plain = Engine.from_config(parse_config({"target": {"model": str(workspace / "tiny")}, "drafters": [],
                                             "k_matrix": [[]]}))
    prompt = engine.tokenizer("w3 w9 w4 w3 w9").input_ids
    request = Request(prompt_ids=prompt, max_new_tokens=12, ignore_eos=True)
    assert engine.generate([request])[0].token_ids == plain.generate([request.model_copy()])[0].token_ids


def test_adapter_for_another_target_or_shape_is_refused(workspace, adapter):
    other = save_tiny_model_dir(workspace / "other", seed=5)
    config = config_with(workspace, adapter[0])
    config.target.model = str(other)
    with pytest.raises(ConfigError, match="distilled for another target"):
        Engine.from_config(config)
    with pytest.raises(ConfigError, match="from_target_layers: 2"):
        Engine.from_config(config_with(workspace, adapter[0], layers=3))


def test_interrupted_run_resumes_to_the_same_adapter(workspace, monkeypatch):
    settings = DistillSettings(**FAST)
    prompts = [str(workspace / "prompts.txt")]
    run(str(workspace / "tiny"), "layers:2", prompts, workspace / "straight", settings)

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crash_after_checkpoint(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # step 3 was checkpointed; die in step 4
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(str(workspace / "tiny"), "layers:2", prompts, workspace / "resumed", settings)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert not (workspace / "resumed" / "adapter_model.safetensors").exists()
    run(str(workspace / "tiny"), "layers:2", prompts, workspace / "resumed", settings, resume=True)

    straight = load_file(str(workspace / "straight" / "adapter_model.safetensors"))
    resumed = load_file(str(workspace / "resumed" / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_reduced_vocab_adapter(workspace):
    folder = workspace / "reduced"
    run(str(workspace / "tiny"), "layers:2", [str(workspace / "prompts.txt")], folder,
        DistillSettings(**{**FAST, "draft_vocab": 16}))
    assert read_metadata(folder).draft_vocab_size <= 16
    engine = Engine.from_config(config_with(workspace, folder))
    head = engine.drafters[0].runner.model.lm_head
    assert isinstance(head, ReducedHead) and len(head.token_ids) <= 16
    plain = Engine.from_config(parse_config({"target": {"model": str(workspace / "tiny")}, "drafters": [],
                                             "k_matrix": [[]]}))
    request = Request(prompt_ids=engine.tokenizer("w5 w6 w7").input_ids, max_new_tokens=10, ignore_eos=True)
    assert engine.generate([request])[0].token_ids == plain.generate([request.model_copy()])[0].token_ids


def test_reduced_head_keeps_vocabulary_width():
    full = torch.nn.Linear(4, 10, bias=False)
    head = ReducedHead(full, torch.tensor([2, 7]))
    x = torch.randn(3, 4)
    out = head(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out[:, [2, 7]], full(x)[:, [2, 7]])
    assert torch.isinf(out[:, 0]).all()


def test_acceptance_counts_runs_of_agreement():
    # Target top-1 along 5 continuation positions; the draft agrees at positions 0, 1, 3.
    example = Example(tokens=[9, 1, 2, 3, 4, 5], start=1, topk_ids=torch.tensor([[1], [2], [3], [4], [5]]),
                      topk_logits=torch.zeros(5, 1).half())
    guesses = [1, 2, 0, 4, 0]

    def forward(tokens, mask):
        logits = torch.zeros(1, tokens.shape[1], 10)
        for j, g in enumerate(guesses):
            logits[0, j, g] = 1.0
        return logits

    result = acceptance(forward, [example])
    assert result.agreement == pytest.approx(3 / 5)
    assert result.accepted_k4 == pytest.approx((2 + 1 + 0 + 1 + 0) / 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank", "0"], "--rank"),
        (["--target-modules", "no_such_proj"], "--target-modules"),
        (["--draft", "layers:x"], "--draft"),
        (["--device", "gpu0"], "--device"),
        *([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device: CUDA is not available")]),
    ],
)
def test_cli_bad_inputs(workspace, args, message):
    base = ["distill", "--target", str(workspace / "tiny"), "--draft", "layers:2",
            "--prompts", str(workspace / "prompts.txt"), "--out", str(workspace / "bad"), "--steps", "1"]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output


def test_prompt_files_empty_or_unreadable(workspace):
    empty = workspace / "empty.jsonl"
    empty.write_text("\n")
    for prompts, message in [(empty, "holds no prompts"), (workspace / "missing.txt", "cannot read")]:
        with pytest.raises(ConfigError, match=message):
            run(str(workspace / "tiny"), "layers:2", [str(prompts)], workspace / "x", DistillSettings(**FAST))


def test_draft_model_without_safetensors(workspace):
    (workspace / "pt").mkdir()
    (workspace / "pt" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="only safetensors"):
        run(str(workspace / "tiny"), str(workspace / "pt"), [str(workspace / "prompts.txt")], workspace / "y",
            DistillSettings(**FAST))


class Payload:
    """Stands for any pickled object: unpickling it could run code."""


def test_resume_refuses_a_checkpoint_that_is_not_plain_data(workspace, tmp_path):
    """Checkpoints load with `weights_only=True`: a pickled object is refused, by name, before it runs."""
    out = tmp_path / "evil"
    settings = DistillSettings(**FAST)
    run(str(workspace / "tiny"), "layers:2", [str(workspace / "prompts.txt")], out, settings)
    state = out / "checkpoint" / "state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"lora": {}, "payload": Payload()}, state)
    with pytest.raises(ConfigError, match=r"--resume: cannot read .*state.pt .*delete .* to train from the start"):
        run(str(workspace / "tiny"), "layers:2", [str(workspace / "prompts.txt")], out, settings, resume=True)


def test_each_held_out_set_is_scored_on_its_own_and_chats_take_the_template(tmp_path):
    """Two `--val-prompts` sets (text prompts; chats in `messages`): the report gives each set's agreement
    before and after beside the overall figures, and records that the chat template was used."""
    save_tiny_model_dir(tmp_path / "tiny", chat_template=TINY_CHAT_TEMPLATE)
    train = tmp_path / "train.txt"
    train.write_text("\n".join(" ".join(f"w{(i * 5 + j) % 60 + 3}" for j in range(6)) for i in range(8)))
    code = tmp_path / "code.txt"
    code.write_text("w3 w4 w5 w6\nw9 w8 w7 w6\n")
    chats = tmp_path / "chats.jsonl"
    chats.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} w{i + 1}"}]})
                               for i in (10, 20, 30)))
    report = run(str(tmp_path / "tiny"), "layers:2", [str(train)], tmp_path / "lora", DistillSettings(**FAST),
                 val_specs=[str(code), str(chats)], chat=True)
    assert report["chat_template"] is True and report["held_out_sequences"] == 5
    assert {name: part["sequences"] for name, part in report["held_out"].items()} == {str(code): 2, str(chats): 3}
    # `chat:SOURCE` templates one source's text prompts only: the same ids as --chat gave for that set
    one = run(str(tmp_path / "tiny"), "layers:2", [str(train)], tmp_path / "lora1", DistillSettings(**FAST),
              val_specs=[str(code), f"chat:{code}"])
    assert one["held_out"][f"chat:{code}"]["before"] == report["held_out"][str(code)]["before"]
    _, val_part, groups = torch.load(tmp_path / "lora1" / "dataset.pt", weights_only=True)
    prompts = {group: [e["tokens"][: e["start"]] for e, g in zip(val_part, groups) if g == group] for group in groups}
    assert prompts[str(code)] == [[3, 4, 5, 6], [9, 8, 7, 6]]
    assert prompts[f"chat:{code}"] == [[2, 3, 4, 5, 6, 2], [2, 9, 8, 7, 6, 2]]
    for part in report["held_out"].values():
        assert set(part) == {"sequences", "before", "after"}
        assert 0 <= part["after"]["agreement"] <= 1
    weighted = sum(p["sequences"] * p["after"]["accepted_k8"] for p in report["held_out"].values()) / 5
    assert weighted == pytest.approx(report["after"]["accepted_k8"], abs=1e-3), "the parts make up the whole"
    saved = json.loads((tmp_path / "lora" / "distill_report.json").read_text())
    assert saved["held_out"] == report["held_out"]


def test_training_can_start_from_an_adapter_bound_to_the_same_target(workspace, adapter):
    """`--init-adapter`: its rank replaces the settings', "before" is that adapter (on the same held-out set
    it scores what it scored when it was written), and one for another target is refused by option name."""
    folder, first = adapter
    settings = DistillSettings(**{**FAST, "rank": 8, "steps": 3})
    report = run(str(workspace / "tiny"), "layers:2", [str(workspace / "prompts.txt")], workspace / "tuned",
                 settings, init_adapter=folder)
    assert report["init_adapter"] == str(folder) and report["settings"]["rank"] == FAST["rank"]
    assert report["before"] == first["after"]
    other = save_tiny_model_dir(workspace / "other-target", seed=7)
    with pytest.raises(ConfigError, match="--init-adapter: .* distilled for another target"):
        run(str(other), "layers:2", [str(workspace / "prompts.txt")], workspace / "nope", settings,
            init_adapter=folder)
