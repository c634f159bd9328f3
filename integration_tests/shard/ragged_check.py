"""flashinfer's view of a verify forward's KV, computed on CPU: run in the shard's venv, prints JSON.

flashinfer is CUDA-only, so this reimplements the index arithmetic it is given (TGI's
`layers/attention/flashinfer.py::use_decode_state`: page size 1, `indptr` = cumsum of each query row's
KV length, `indices` = the ragged block table) and reads, for each query row, the slots flashinfer would
attend to. The truth is what the paged backends read: row r attends to `block_tables[r][:kv_length[r]]` of
the expanded [B*(S+1), …] table `FlashCausalLM.forward` builds. The ragged table comes from TGI's own
`block_tables_to_ragged` (its torch path; the triton kernel computes the same), fed once with upstream's
arguments (the B per-request lengths) and once with the patched server's `ragged_lengths(batch)`.
"""

import itertools
import json
from types import SimpleNamespace

import torch
from text_generation_server.models.flash_causal_lm import ragged_lengths
from text_generation_server.models.metadata_kernels import block_tables_to_ragged


def flashinfer_rows(indices: torch.Tensor, kv_lengths: torch.Tensor) -> list:
    """Each query row's KV slots as flashinfer's decode plan reads them (None: past the table's end)."""
    indptr = torch.zeros(len(kv_lengths) + 1, dtype=torch.int64)
    indptr[1:] = kv_lengths.cumsum(0)
    return [indices[a:b].tolist() if b <= len(indices) else None for a, b in itertools.pairwise(indptr)]


def main() -> None:
    cache, speculate = [5, 9, 2], 3
    rows, width = len(cache), speculate + 1
    generator = torch.Generator().manual_seed(0)
    slots = torch.randperm(1000, generator=generator).to(torch.int32)  # discontiguous, as with prefix caching
    table = slots[: rows * 16].view(rows, 16)
    batch = SimpleNamespace(
        input_lengths=[1] * rows, cache_lengths=cache, input_lengths_tensor=torch.ones(rows, dtype=torch.int32),
        cache_lengths_tensor=torch.tensor(cache, dtype=torch.int32), max_current_length=max(cache) + 1,
        speculative_ids=torch.zeros(rows, speculate, dtype=torch.int64),
    )
    # FlashCausalLM.forward's speculative branch: one table row and one KV length per verify row
    expanded = table.unsqueeze(1).expand(rows, width, -1).reshape(rows * width, -1).contiguous()
    kv_lengths = torch.tensor([c + 1 + j for c in cache for j in range(width)])
    truth = [expanded[r][: kv_lengths[r]].tolist() for r in range(rows * width)]
    upstream = block_tables_to_ragged(
        block_tables=expanded, input_lengths=batch.input_lengths, cache_lengths=batch.cache_lengths,
        input_lengths_tensor=batch.input_lengths_tensor, cache_lengths_tensor=batch.cache_lengths_tensor,
        max_current_length=batch.max_current_length)
    patched = block_tables_to_ragged(block_tables=expanded, **ragged_lengths(batch))
    report = {"rows": rows * width}
    for name, ragged in (("upstream", upstream), ("patched", patched)):
        seen = flashinfer_rows(ragged, kv_lengths)
        report[name] = {"table_entries": len(ragged), "needed_entries": int(kv_lengths.sum()),
                        "correct_rows": sum(s == t for s, t in zip(seen, truth)),
                        "rows_past_the_end": sum(s is None for s in seen)}
    # Without speculation the patched call is upstream's, entry for entry.
    plain = SimpleNamespace(**{**vars(batch), "speculative_ids": None})
    report["plain_unchanged"] = torch.equal(
        block_tables_to_ragged(block_tables=table, **ragged_lengths(plain)),
        block_tables_to_ragged(block_tables=table, input_lengths=plain.input_lengths,
                               cache_lengths=plain.cache_lengths, input_lengths_tensor=plain.input_lengths_tensor,
                               cache_lengths_tensor=plain.cache_lengths_tensor,
                               max_current_length=plain.max_current_length))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
