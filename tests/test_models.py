"""Loading: safetensors only, draft cuts from the target, LoRA adapters, vocabulary checks."""

import pytest
import torch
import yaml

from helpers import save_tiny_model_dir, tiny_llama
from tgi_csd.adapters import apply_adapter
from tgi_csd.config import parse_config
from tgi_csd.engine import Engine, Request
from tgi_csd.errors import ConfigError
from tgi_csd.models import cut_from_target, resolve_model


def test_cut_shares_weights_and_runs_the_first_layers():
    target = tiny_llama(layers=4)
    draft = cut_from_target(target, 2)
    assert draft.model.layers[1] is target.model.layers[1]
    assert draft.lm_head.weight.data_ptr() == target.lm_head.weight.data_ptr()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        hidden = target(ids, output_hidden_states=True).hidden_states[2]  # after layer 2
        expected = target.lm_head(target.model.norm(hidden))
        torch.testing.assert_close(draft(ids).logits, expected)
    with pytest.raises(ConfigError, match="from_target_layers"):
        cut_from_target(target, 4)


def make_adapter(model, folder, safetensors: bool = True):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder, safe_serialization=safetensors)
    return peft_model


def test_adapter_is_merged_into_a_copy(tmp_path):
    import copy

    base = tiny_llama(layers=2)
    reference = make_adapter(copy.deepcopy(base), tmp_path / "lora")
    before = base.model.layers[0].self_attn.q_proj.weight.clone()
    merged = apply_adapter(base, str(tmp_path / "lora"))
    ids = torch.tensor([[3, 4, 5]])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(base.model.layers[0].self_attn.q_proj.weight, before), "the base model was modified"


def test_unmerged_adapters_share_the_target_weights(tmp_path):
    import copy

    target = tiny_llama(layers=4)
    target_logits = target(torch.tensor([[3, 4, 5]])).logits.detach()
    references = []
    for seed, name in [(1, "a"), (2, "b")]:
        torch.manual_seed(seed)
        references.append(make_adapter(copy.deepcopy(cut_from_target(target, 2)), tmp_path / name))
    drafts = [apply_adapter(cut_from_target(target, 2), str(tmp_path / name), merge=False) for name in "ab"]
    merged = apply_adapter(cut_from_target(target, 2), str(tmp_path / "a"))
    ids = torch.tensor([[3, 4, 5]])
    with torch.inference_mode():
        for draft, reference in zip(drafts, references):
            torch.testing.assert_close(draft(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(drafts[0](ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(drafts[0](ids).logits, drafts[1](ids).logits)
        torch.testing.assert_close(target(ids).logits, target_logits)
    target_q = target.model.layers[0].self_attn.q_proj
    assert type(target_q) is torch.nn.Linear, "LoRA leaked into the target's modules"
    for draft in drafts:
        q = draft.model.layers[0].self_attn.q_proj
        assert q.base_layer.weight.data_ptr() == target_q.weight.data_ptr(), "base weights were copied"
        assert draft.lm_head.weight.data_ptr() == target.lm_head.weight.data_ptr()


def test_config_needs_an_adapter_to_leave_it_unmerged(tmp_path):
    with pytest.raises(ConfigError, match="merge_adapter: false.* needs an .adapter"):
        config_for(tmp_path, [{"type": "model", "name": "d", "from_target_layers": 2, "merge_adapter": False},
                              {"type": "mag"}], [[2, 0], [0, 2]])


def test_adapter_errors(tmp_path):
    base = tiny_llama(layers=2)
    with pytest.raises(ConfigError, match="adapter: .* not a peft adapter folder"):
        apply_adapter(base, str(tmp_path / "missing"))
    make_adapter(tiny_llama(layers=2), tmp_path / "bin", safetensors=False)
    with pytest.raises(ConfigError, match="no adapter_model.safetensors"):
        apply_adapter(base, str(tmp_path / "bin"))


def test_resolve_model_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither a known model"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        resolve_model(str(tmp_path / "pt"))


def config_for(folder, drafters, k_matrix):
    return parse_config({"target": {"model": str(folder)}, "drafters": drafters, "k_matrix": k_matrix})


def bind(adapter, target, layers: int) -> None:
    """`tgi-csd adapter bind`: the binding the loader checks (adapters made here, not by distill)."""
    from typer.testing import CliRunner

    from tgi_csd.cli import app

    result = CliRunner().invoke(app, ["adapter", "bind", "--adapter", str(adapter), "--target", str(target),
                                      "--from-target-layers", str(layers)])
    assert result.exit_code == 0, result.output


def test_an_adapter_must_be_bound_to_its_target(tmp_path):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    make_adapter(cut_from_target(tiny_llama(layers=4), 2), tmp_path / "lora")
    spec = {"type": "model", "name": "d2", "from_target_layers": 2, "adapter": str(tmp_path / "lora")}
    config = config_for(folder, [spec, {"type": "mag", "bigram": None}], [[2, 1], [0, 2]])
    with pytest.raises(ConfigError, match="has no tgi_csd_adapter.json.*tgi-csd adapter bind"):
        Engine.from_config(config)
    bind(tmp_path / "lora", folder, 3)  # bound to another draft shape: still refused, by name
    with pytest.raises(ConfigError, match="set from_target_layers: 3"):
        Engine.from_config(config)
    bind(tmp_path / "lora", folder, 2)
    Engine.from_config(config)


def test_engine_from_config_on_a_saved_model(tmp_path):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    make_adapter(cut_from_target(tiny_llama(layers=4), 2), tmp_path / "lora")
    bind(tmp_path / "lora", folder, 2)
    config = config_for(
        folder,
        [{"type": "model", "name": "d2", "from_target_layers": 2, "adapter": str(tmp_path / "lora")},
         {"type": "mag", "bigram": None}, {"type": "tgi-ngram"}],
        [[2, 1, 1], [0, 2, 0]],
    )
    engine = Engine.from_config(config)
    plain = Engine.from_config(config_for(folder, [], [[]]))
    prompt = engine.tokenizer("w5 w6 w7 w5 w6").input_ids
    out = engine.generate([Request(prompt_ids=prompt, max_new_tokens=16, ignore_eos=True)])[0]
    ref = plain.generate([Request(prompt_ids=prompt, max_new_tokens=16, ignore_eos=True)])[0]
    assert out.token_ids == ref.token_ids
    assert set(engine.report()["drafts"]) >= {"d2->target", "mag->d2"}


def test_engine_with_two_unmerged_adapters_on_one_base(tmp_path):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    for seed, name in [(1, "a"), (2, "b")]:
        torch.manual_seed(seed)
        make_adapter(cut_from_target(tiny_llama(layers=4), 3 if name == "a" else 2), tmp_path / name)
        bind(tmp_path / name, folder, 3 if name == "a" else 2)
    config = config_for(
        folder,
        [{"type": "model", "name": "d3", "from_target_layers": 3, "adapter": str(tmp_path / "a"),
          "merge_adapter": False},
         {"type": "model", "name": "d2", "from_target_layers": 2, "adapter": str(tmp_path / "b"),
          "merge_adapter": False},
         {"type": "mag", "bigram": None}],
        [[3, 1, 1], [0, 2, 1], [0, 0, 2]],
    )
    engine = Engine.from_config(config)
    plain = Engine.from_config(config_for(folder, [], [[]]))
    prompts = [engine.tokenizer(text).input_ids for text in ("w5 w6 w7 w5 w6", "w9 w3 w9 w3 w9 w3")]
    requests = [Request(prompt_ids=p, max_new_tokens=16, ignore_eos=True) for p in prompts]
    outs = engine.generate(requests)
    refs = plain.generate([Request(prompt_ids=p, max_new_tokens=16, ignore_eos=True) for p in prompts])
    assert [o.token_ids for o in outs] == [r.token_ids for r in refs]
    assert set(engine.report()["drafts"]) >= {"d3->target", "d2->d3", "mag->d2"}


def test_drafter_with_another_vocabulary_is_refused(tmp_path):
    target = save_tiny_model_dir(tmp_path / "target", vocab=64)
    other = save_tiny_model_dir(tmp_path / "other", vocab=80)
    config = config_for(target, [{"type": "model", "name": "other", "model": str(other)}, {"type": "mag"}],
                        [[2, 0], [0, 2]])
    with pytest.raises(ConfigError, match="tokenizer differs|vocabulary"):
        Engine.from_config(config)


def test_bigram_path_must_match_tokenizer(tmp_path):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    config = config_for(folder, [{"type": "mag", "bigram": str(tmp_path / "b.npz")}], [[2]])
    with pytest.raises(ConfigError, match="bigram"):
        Engine.from_config(config)


def test_yaml_roundtrip_of_config(tmp_path):
    folder = save_tiny_model_dir(tmp_path / "tiny")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"target": {"model": str(folder)}, "drafters": [{"type": "mag", "bigram": None}],
                                    "k_matrix": [[3]]}))
    from tgi_csd.config import load_config

    assert load_config(path).drafters[0].bigram is None


def test_truncated_adapter_files_are_one_clear_error(tmp_path):
    """Each file of an adapter folder cut at 10 offsets: a ConfigError naming that file, never a raw one."""
    from test_bigram import truncations

    from tgi_csd.adapters import save_vocab, target_fingerprint
    from tgi_csd.models import load_model, load_tokenizer

    folder = save_tiny_model_dir(tmp_path / "tiny")
    target = load_model(folder)
    fingerprint = target_fingerprint(target, load_tokenizer(folder))
    adapter = tmp_path / "lora"
    make_adapter(cut_from_target(tiny_llama(layers=4), 2), adapter)
    bind(adapter, folder, 2)
    save_vocab(adapter, torch.arange(0, 64, 2))
    apply_adapter(cut_from_target(target, 2), str(adapter), fingerprint, 2)  # whole: loads
    for name in ["adapter_model.safetensors", "adapter_config.json", "tgi_csd_adapter.json",
                 "draft_vocab.safetensors"]:
        path = adapter / name
        whole = path.read_bytes()
        for offset in truncations(path):
            path.write_bytes(whole[:offset])
            with pytest.raises(ConfigError, match=rf"adapter: cannot read {path} "):
                apply_adapter(cut_from_target(target, 2), str(adapter), fingerprint, 2)
        path.write_bytes(whole)


def test_target_prefix_reads_only_the_layers_its_cuts_keep(tmp_path):
    """`load_target_prefix` (the TGI strategy's source of layer cuts) holds the first N layers only, yet its
    cuts equal cuts of the whole target (same logits) and it fingerprints as the whole target."""
    from tgi_csd.adapters import target_fingerprint
    from tgi_csd.models import load_model, load_target_prefix, load_tokenizer
    from tgi_csd.runner import ModelRunner

    folder = save_tiny_model_dir(tmp_path / "tiny", layers=4)
    whole, prefix = load_model(folder), load_target_prefix(folder, 2)
    assert len(prefix.model.layers) == 2 and prefix.config.num_hidden_layers == 4
    ids = torch.tensor([[3, 4, 5, 6, 3, 4]])
    with torch.no_grad():
        for layers in (1, 2):
            assert torch.equal(cut_from_target(prefix, layers)(ids).logits, cut_from_target(whole, layers)(ids).logits)
    tokenizer = load_tokenizer(folder)
    assert target_fingerprint(prefix, tokenizer) == target_fingerprint(whole, tokenizer)
    assert ModelRunner(prefix, "p").weight_bytes < 0.75 * ModelRunner(whole, "w").weight_bytes
    with pytest.raises(ConfigError, match="3 layers asked of a target loaded with its first 2 only"):
        cut_from_target(prefix, 3)
    with pytest.raises(ConfigError, match="must be in 1..3"):
        load_target_prefix(folder, 4)
