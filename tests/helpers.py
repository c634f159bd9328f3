"""Test helpers: tiny random Llama models (fast, structure only) and engines over them."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tgi_csd.drafters.base import Drafter
from tgi_csd.drafters.mag import MaGDrafter
from tgi_csd.engine import Engine
from tgi_csd.models import cut_from_target
from tgi_csd.runner import ModelRunner


class StubTokenizer:
    """Enough of a tokenizer for the engine: EOS id and decode (one character per token id)."""

    def __init__(self, eos_token_id: int | None = None) -> None:
        self.eos_token_id = eos_token_id

    def decode(self, ids: list[int], **_: object) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def tiny_llama(vocab: int = 64, layers: int = 4, seed: int = 0, init: float = 0.1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=init,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


def build_engine(target: LlamaForCausalLM, layout: str, eos: int | None = None, adaptive=None) -> Engine:
    """Engines over one target: 'none', 'mag', 'ngram', 'sd' (one drafter), 'csd' (2 neural levels + MaG),
    'csd-sampled' (the same, neural drafters sampling when the request samples), 'csd-lead' (the same,
    MaG drafting the whole draft on a suffix match of 2+ tokens); `adaptive`: `AdaptiveSettings` for every row."""
    from tgi_csd.drafters.ngram import TGINGramDrafter

    tokenizer = StubTokenizer(eos)
    target_runner = ModelRunner(target, "target")
    if layout == "none":
        return Engine.assemble(target_runner, [], [[]], tokenizer, adaptive=adaptive)
    if layout == "mag":
        return Engine.assemble(target_runner, [MaGDrafter(None)], [[4]], tokenizer, adaptive=adaptive)
    if layout == "ngram":
        return Engine.assemble(target_runner, [TGINGramDrafter()], [[3]], tokenizer, adaptive=adaptive)
    from tgi_csd.builder import ModelLevel

    sample = layout == "csd-sampled"
    big = ModelLevel("big", ModelRunner(cut_from_target(target, 3), "big"), sample=sample)
    if layout == "sd":
        return Engine.assemble(target_runner, [big], [[4]], tokenizer, adaptive=adaptive)
    small = ModelLevel("small", ModelRunner(cut_from_target(target, 1), "small"), sample=sample)
    mag = MaGDrafter(None, lead_ngram=2 if layout == "csd-lead" else None)
    return Engine.assemble(target_runner, [big, small, mag], [[2, 1, 2], [0, 2, 1], [0, 0, 3]], tokenizer,
                           adaptive=adaptive)


def hf_greedy(model: LlamaForCausalLM, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


#: a chat template for the tiny word-level tokenizer: each turn 'w2 CONTENT', the assistant's prompt 'w2'
TINY_CHAT_TEMPLATE = ("{% for m in messages %}w2 {{ m['content'] }} {% endfor %}"
                      "{% if add_generation_prompt %}w2{% endif %}")


def save_tiny_model_dir(folder, vocab: int = 64, layers: int = 4, seed: int = 0, chat_template: str | None = None):
    """A tiny Llama with a word-level tokenizer ('w0' … 'w{vocab-1}', EOS 'w1'), saved as safetensors; the
    tokenizer has `chat_template` when given."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab)}
    backend = Tokenizer(models.WordLevel(words, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", eos_token="w1")
    tokenizer.chat_template = chat_template
    model = tiny_llama(vocab=vocab, layers=layers, seed=seed)
    model.config.eos_token_id = 1
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_cascade_config(folder, adaptive: dict | None = None, chat_template: str | None = None):
    """`folder/cascade.yaml` over a tiny saved target (`folder/tiny`, with `chat_template`): a 2-layer cut
    drafter, then MaG without a bigram table, k-matrix [[2, 2], [0, 3]]; with `adaptive` as the config's
    adaptive section."""
    import yaml

    save_tiny_model_dir(folder / "tiny", chat_template=chat_template)
    data = {
        "target": {"model": str(folder / "tiny")},
        "drafters": [{"type": "model", "name": "half", "from_target_layers": 2}, {"type": "mag", "bigram": None}],
        "k_matrix": [[2, 2], [0, 3]],
    }
    if adaptive is not None:
        data["adaptive"] = adaptive
    config = folder / "cascade.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


class FakeClock:
    """A deterministic `tgi_csd.clock` source: time moves only when a test says so (`advance`)."""

    def __init__(self) -> None:
        self.time = 0.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


class StatelessDrafter(Drafter):
    """A test drafter that keeps no per-row state: joining, leaving and committed histories change nothing."""

    def add_rows(self, infos):
        pass

    def keep_rows(self, keep):
        pass

    def commit(self, histories):
        pass
