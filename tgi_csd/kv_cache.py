"""A batched KV cache whose rows have their own lengths, so each sequence rolls back on its own.

The HF model sees it as a `Cache`: attention layers call `update()` and get back the keys and values
to attend to. Works with transformers 4.51 (`past_key_values=`) and 5.x (`cache=`).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class RaggedKVCache(Cache):
    """KV buffers `[B, H, C, D]` per layer; row `b` holds valid entries in `[0, lengths[b])`.

    Invariants: entries at or past `lengths[b]` are never attended to (the caller's mask hides
    them), so rolling a row back is just lowering its length; the last slot `C - 1` is scratch
    for padding tokens and is never inside the attended window.
    """

    is_compileable = False

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 capacity: int = 256, device: torch.device | str = "cpu") -> None:
        # Cache.__init__ differs between transformers releases and sets nothing we use.
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.keys = [self._empty(0, capacity) for _ in range(num_layers)]
        self.values = [self._empty(0, capacity) for _ in range(num_layers)]
        self.lengths: list[int] = []
        self._rows: torch.Tensor | None = None
        self._write_pos: torch.Tensor | None = None
        self._row_index: torch.Tensor | None = None
        self._window = 0

    def _empty(self, batch: int, capacity: int) -> torch.Tensor:
        return torch.zeros(batch, self.num_kv_heads, capacity, self.head_dim, dtype=self.dtype, device=self.device)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    # -- batch membership -------------------------------------------------------------------
    def add_rows(self, count: int) -> None:
        """Append `count` empty rows."""
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                buffers[i] = torch.cat([buf, self._empty(count, self.capacity)])
        self.lengths.extend([0] * count)

    def keep_rows(self, keep: list[int]) -> None:
        """Keep only rows `keep`, in that order."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                buffers[i] = buf.index_select(0, index)
        self.lengths = [self.lengths[i] for i in keep]

    def _reserve(self, needed: int) -> None:
        """Grow so that `needed` positions plus the scratch slot fit."""
        if needed + 1 <= self.capacity:
            return
        capacity = max(needed + 1, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                grown = self._empty(buf.shape[0], capacity)
                grown[:, :, : buf.shape[2] - 1] = buf[:, :, :-1]
                buffers[i] = grown

    # -- one forward ---------------------------------------------------------------------------
    def prepare(self, rows: list[int], new_counts: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Plan a forward of `width` left-padded new tokens for `rows`.

        Row `rows[i]` gets `new_counts[i]` real tokens at its current length. Returns
        `(position_ids [R, width], attention_mask [R, 1, width, window])` (additive float mask).
        """
        starts = [self.lengths[r] for r in rows]
        window = max(s + n for s, n in zip(starts, new_counts))
        self._reserve(window)
        scratch = self.capacity - 1
        positions, write_pos = [], []
        for start, count in zip(starts, new_counts):
            pad = width - count
            positions.append([0] * pad + list(range(start, start + count)))
            write_pos.append([scratch] * pad + list(range(start, start + count)))
        device = self.device
        position_ids = torch.tensor(positions, dtype=torch.long, device=device)
        self._write_pos = torch.tensor(write_pos, dtype=torch.long, device=device)
        all_rows = rows == list(range(self.batch_size))
        self._rows = None if all_rows else torch.tensor(rows, dtype=torch.long, device=device)
        self._row_index = (torch.arange(self.batch_size, device=device) if all_rows else self._rows)[:, None]
        self._window = window
        keys = torch.arange(window, device=device)
        allowed = keys[None, None, :] <= position_ids[:, :, None]
        # Padding queries (position 0) see key 0 only: never an all-masked row, so never NaN.
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        return position_ids, mask[:, None]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's keys/values and return the attended window of the rows."""
        assert self._write_pos is not None, "prepare() must run before the forward"
        out = []
        for buf, new in ((self.keys[layer_idx], key_states), (self.values[layer_idx], value_states)):
            buf[self._row_index, :, self._write_pos] = new.transpose(1, 2).to(buf.dtype)
            view = buf if self._rows is None else buf.index_select(0, self._rows)
            out.append(view[:, :, : self._window])
        return out[0], out[1]

    def commit(self, rows: list[int], lengths: list[int]) -> None:
        """Set the valid length of each row after a forward (roll back rejected tokens)."""
        for row, length in zip(rows, lengths):
            self.lengths[row] = length

    def get_seq_length(self, layer_idx: int | None = 0, *args: object) -> int:
        return self._window

    def get_mask_sizes(self, *args: object, **kwargs: object) -> tuple[int, int]:
        return self._window, 0

    def __len__(self) -> int:
        return self.num_layers

    # transformers 5.x asks these of a cache to pick the mask layer; every layer here is full attention.
    @property
    def is_sliding(self) -> list[bool]:
        return [False] * self.num_layers

    @property
    def is_linear(self) -> list[bool]:
        return [False] * self.num_layers

    @property
    def is_dummy(self) -> list[bool]:
        return [False] * self.num_layers
