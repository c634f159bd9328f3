"""A small Llama that `--num-shard 2` can split, for the tensor-parallel test.

SmolLM2-135M has 9 attention heads and 3 KV heads, which TGI cannot shard over 2 ranks. This model keeps
SmolLM2's tokenizer (so the router and the prompts are the same) with 4 heads and 2 KV heads. Its weights
are seeded and built so that greedy decoding is a walk along fixed cycles of 6 tokens: the head maps each
token's embedding to the next token of its cycle, and the layers (attention and MLP, whose outputs the
ranks all-reduce) add a small perturbation. Outputs therefore repeat (MaG drafts them, so speculation is
exercised) and the top-2 logit gap is wide, so a different reduction order cannot flip a token.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "generation_config.json")
CYCLE = 6


def shardable_model(folder: Path, tokenizer_from: Path, seed: int = 0) -> Path:
    """Write the model into `folder` once (safetensors + config + `tokenizer_from`'s tokenizer files)."""
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    vocab = len(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    # next[x]: the token after x. Special tokens are fixed points (never reached from text), so no cycle
    # holds EOS; the others form cycles of CYCLE tokens.
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in torch.randperm(vocab, generator=generator).tolist() if i not in special]
    following = torch.arange(vocab)
    for start in range(0, len(ordinary) - CYCLE + 1, CYCLE):
        cycle = ordinary[start:start + CYCLE]
        for position, token in enumerate(cycle):
            following[token] = cycle[(position + 1) % CYCLE]
    with torch.no_grad():
        embed = torch.randn(vocab, config.hidden_size, generator=generator)
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight.zero_()
        model.lm_head.weight[following] = embed  # logit of next[x] given x: |e_x|^2, far above the rest
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.05)
            layer.mlp.down_proj.weight.mul_(0.05)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, folder / name)
    return folder
