"""A pure-torch stand-in for the few `intel_extension_for_pytorch` ops TGI 3.3.7's CPU flash path calls.

Test-only (the integration suite puts this folder first on the shard's PYTHONPATH when the real
IPEX is not installable, e.g. with a torch it has no build for). With it TGI takes `SYSTEM="ipex"`
on CPU, so `FlashCausalLM` with the paged KV cache (layout `[blocks, kv_heads, BLOCK, head_dim]`)
runs, and with it the speculative verify path; its collectives are torch's gloo, so `--num-shard N`
runs too. Slow but exact: every op is the textbook formula in the input dtype (norms in float32, like HF).
"""

from __future__ import annotations

import sys
import types

import torch

__version__ = "0.0.0+tgi-csd-standin"


def _rms_norm(x, weight, eps):
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm(residual, x, weight, bias, eps, add_back):
    if residual is not None:
        x = x + residual
        if add_back:
            residual.copy_(x)
    out = _rms_norm(x, weight, eps)
    return out + bias if bias is not None else out


def add_layer_norm(residual, x, weight, bias, eps, add_back):
    if residual is not None:
        x = x + residual
        if add_back:
            residual.copy_(x)
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)


def rotary_embedding(query, key, sin, cos, rotary_dim, is_neox, *args, **kwargs):
    """In place, NeoX style: the two halves of the first `2 * cos.shape[-1]` dims rotate."""
    half = cos.shape[-1]
    cos = cos.reshape(cos.shape[0], 1, half)
    sin = sin.reshape(sin.shape[0], 1, half)
    for t in (query, key):
        x1 = t[..., :half].clone()
        x2 = t[..., half : 2 * half].clone()
        t[..., :half] = x1 * cos - x2 * sin
        t[..., half : 2 * half] = x2 * cos + x1 * sin


def _attend(q, k, v, scale, causal):
    """q [Tq, H, D], k/v [Tk, Hkv, D] -> [Tq, H, D]; causal aligns the last query with the last key."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    if causal:
        tq, tk = q.shape[0], k.shape[0]
        mask = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=tk - tq)
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def varlen_attention(query, key, value, out, cu_q, cu_k, max_q, max_k, dropout, scale, zero_tensors, causal,
                     return_softmax, generator, *args, **kwargs):
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[i], cu_q[i + 1], cu_k[i], cu_k[i + 1]
        out[q0:q1] = _attend(query[q0:q1], key[k0:k1], value[k0:k1], scale, causal)
    return out


class PagedAttention:
    @staticmethod
    def reshape_and_cache(key, value, key_cache, value_cache, slots, *args, **kwargs):
        block = key_cache.shape[2]
        slots = slots.long()
        blocks, offsets = slots // block, slots % block
        key_cache[blocks, :, offsets] = key.to(key_cache.dtype)
        value_cache[blocks, :, offsets] = value.to(value_cache.dtype)

    @staticmethod
    def single_query_cached_kv_attention(out, query, key_cache, value_cache, kv_head_mapping, scale, block_tables,
                                         context_lens, block_size, max_context_len, alibi, *args, **kwargs):
        lengths = context_lens.tolist()
        for i, length in enumerate(lengths):
            used = (length + block_size - 1) // block_size
            blocks = block_tables[i, :used].long()
            # [used, Hkv, BLOCK, D] -> [used * BLOCK, Hkv, D], cut to the context
            k = key_cache[blocks].permute(0, 2, 1, 3).reshape(-1, key_cache.shape[1], key_cache.shape[3])[:length]
            v = value_cache[blocks].permute(0, 2, 1, 3).reshape(-1, value_cache.shape[1], value_cache.shape[3])[:length]
            out[i : i + 1] = _attend(query[i : i + 1], k, v, scale, causal=False)
        return out

    @staticmethod
    def flash_attn_varlen_func(*args, **kwargs):
        raise NotImplementedError("tgi-csd IPEX stand-in: use ATTENTION=paged (flashdecoding-ipex is not provided)")


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("tgi-csd IPEX stand-in: not provided")


def _module(name: str, **attrs) -> types.ModuleType:
    """A real submodule, so `from intel_extension_for_pytorch.llm.modules import X` works."""
    module = types.ModuleType(f"{__name__}.{name}")
    module.__dict__.update(attrs)
    sys.modules[module.__name__] = module
    return module


llm = _module("llm")
llm.functional = _module(
    "llm.functional", add_rms_norm=add_rms_norm, add_layer_norm=add_layer_norm, rotary_embedding=rotary_embedding,
    varlen_attention=varlen_attention,
)
llm.modules = _module("llm.modules", PagedAttention=PagedAttention, GatedMLPMOE=_Unavailable)
llm.quantization = _module("llm.quantization", IPEXWeightOnlyQuantizedLinear=_Unavailable, QuantMethod=None,
                           QuantDtype=None)
def init_process_group(backend, world_size, rank, timeout, pg_options=None):
    """IPEX's oneCCL process group, here torch's gloo (TGI's `--num-shard N` on CPU)."""
    torch.distributed.init_process_group(backend="gloo", world_size=world_size, rank=rank, timeout=timeout)


def all_gather_into_tensor(output, input, group=None):
    """torch's semantics: `output`'s storage is the ranks' inputs back to back."""
    parts = [torch.empty_like(input) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(parts, input.contiguous(), group=group)
    output.view(-1).copy_(torch.cat([part.reshape(-1) for part in parts]))


distributed = _module("distributed", all_reduce=torch.distributed.all_reduce, all_gather=torch.distributed.all_gather,
                      all_gather_into_tensor=all_gather_into_tensor, init_process_group=init_process_group)
