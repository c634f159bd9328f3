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
        #: None, or the most positions (scratch slot included) growth may double to: a row that needs more
        #: still gets exactly what it needs (the engine sets it under a target KV budget).
        self.grow_limit: int | None = None
        self._initial_capacity = capacity
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

    @property
    def token_bytes(self) -> int:
        """Bytes one token position takes in the keys and values of all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes the key and value buffers hold now."""
        return sum(buf.numel() * buf.element_size() for buf in (*self.keys, *self.values))

    # -- batch membership -------------------------------------------------------------------
    def add_rows(self, count: int) -> None:
        """Append `count` empty rows (into buffers no longer than `grow_limit` when the cache was empty)."""
        if not self.lengths and self.grow_limit is not None and self.capacity > self.grow_limit:
            self.keys = [self._empty(0, self.grow_limit) for _ in range(self.num_layers)]
            self.values = [self._empty(0, self.grow_limit) for _ in range(self.num_layers)]
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                buffers[i] = torch.cat([buf, self._empty(count, self.capacity)])
        self.lengths.extend([0] * count)

    def keep_rows(self, keep: list[int]) -> None:
        """Keep only rows `keep`, in that order (none: back to the initial capacity)."""
        if not keep:
            self.keys = [self._empty(0, self._initial_capacity) for _ in range(self.num_layers)]
            self.values = [self._empty(0, self._initial_capacity) for _ in range(self.num_layers)]
            self.lengths = []
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                buffers[i] = buf.index_select(0, index)
        self.lengths = [self.lengths[i] for i in keep]

    def reserve(self, rows: list[int], needs: list[int]) -> list[bool]:
        """Which of `rows` may take part in the coming forwards, row `rows[i]` reaching `needs[i]`
        positions: all of them (the buffers grow on demand)."""
        return [True] * len(rows)

    def _slots(self, rows: list[int]) -> list[int]:
        """Buffer index of each row: the row itself."""
        return rows

    def _reserve(self, needed: int) -> None:
        """Grow so that `needed` positions plus the scratch slot fit."""
        if needed + 1 <= self.capacity:
            return
        doubled = 2 * self.capacity if self.grow_limit is None else min(2 * self.capacity, self.grow_limit)
        capacity = max(needed + 1, doubled)
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
        slots = self._slots(rows)
        all_rows = slots == list(range(self.keys[0].shape[0]))
        self._rows = None if all_rows else torch.tensor(slots, dtype=torch.long, device=device)
        self._row_index = (torch.arange(len(slots), device=device) if all_rows else self._rows)[:, None]
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

    def rollback(self, row: int, length: int) -> None:
        """Row `row` keeps only its first `length` positions (the one way a row's length goes down: a rejected
        draft, a re-fed suffix, a row dropped from a budget)."""
        assert 0 <= length <= self.lengths[row], f"rollback of row {row} to {length} past its {self.lengths[row]}"
        self.lengths[row] = length

    def commit(self, rows: list[int], lengths: list[int]) -> None:
        """After a forward: row `rows[i]` holds `lengths[i]` valid positions (what that forward wrote)."""
        for row, length in zip(rows, lengths):
            self.lengths[row] = length

    def get_seq_length(self, layer_idx: int | None = 0, *args: object) -> int:
        return self._window

    def get_mask_sizes(self, *args: object, **kwargs: object) -> tuple[int, int]:
        return self._window, 0

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={self.batch_size}, capacity={self.capacity}, nbytes={self.nbytes})"

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


class BudgetedKVCache(RaggedKVCache):
    """A `RaggedKVCache` whose buffers never hold more than `budget_bytes`; rows that do not fit are
    dropped (length 0, like a rollback to nothing) and rebuilt by the forward that next feeds them.

    Rows live in slots of `[S, H, C, D]` buffers: `slot[row]`, or -1 when not resident (length 0).
    Invariant: `S * C <= positions`, the positions the budget holds beside a headroom of one buffer,
    so a resize (buffer by buffer, copying slices with no temporary) stays within the budget too.
    `reserve` ranks the rows asked for and the resident ones, then takes each in turn if it still fits:
      0. protected rows: resident, and fed fewer than twice their rebuild length since they became
         resident, so a rebuild costs at most about half of a row's drafter work (no thrashing);
      1. the other rows asked for, least recently served first (rows waiting for a slot rotate in);
      2. the other resident rows, most recently served first (least recently used are dropped).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 budget_bytes: int, device: torch.device | str = "cpu") -> None:
        super().__init__(num_layers, num_kv_heads, head_dim, dtype, capacity=0, device=device)
        self.budget_bytes = budget_bytes
        self.positions = budget_bytes // self.position_bytes(self)
        self.slot: list[int] = []
        self.served: list[int] = []  # `clock` when each row was last served (or joined)
        self.credit: list[int] = []  # tokens a resident row may still be fed while protected
        self.clock = 0

    @staticmethod
    def position_bytes(cache: RaggedKVCache) -> int:
        """Budget one position takes in a cache shaped like `cache`: its keys and values in every layer
        (`2 * num_layers` buffers) plus one buffer of resize headroom."""
        return cache.token_bytes * (2 * cache.num_layers + 1) // (2 * cache.num_layers)

    # -- batch membership (no buffer changes: slots of rows that leave become free) -------------------
    def add_rows(self, count: int) -> None:
        """Append `count` empty rows, not resident."""
        self.lengths.extend([0] * count)
        self.slot.extend([-1] * count)
        self.served.extend([self.clock] * count)
        self.credit.extend([0] * count)

    def keep_rows(self, keep: list[int]) -> None:
        """Keep only rows `keep`, in that order; the slots of the others become free."""
        self.lengths = [self.lengths[i] for i in keep]
        self.slot = [self.slot[i] for i in keep]
        self.served = [self.served[i] for i in keep]
        self.credit = [self.credit[i] for i in keep]

    # -- residency -----------------------------------------------------------------------------------
    def reserve(self, rows: list[int], needs: list[int]) -> list[bool]:
        """Make as many of `rows` resident as fit, row `rows[i]` with room for `needs[i]` positions.

        Returns which are; only those may take part in the forwards until the next `reserve`. Never
        allocates past the budget: a row that alone needs more is never resident.
        """
        self.clock += 1
        asked = dict(zip(rows, needs))
        resident = [row for row, slot in enumerate(self.slot) if slot >= 0]

        def rank(row: int) -> tuple[int, ...]:
            if self.slot[row] >= 0 and self.credit[row] > 0:
                return 0, row not in asked, -self.served[row], row
            if row in asked:
                return 1, self.served[row], self.slot[row] < 0, row
            return 2, -self.served[row], row

        taken: list[int] = []
        capacity = 0
        for row in sorted(set(rows).union(resident), key=rank):
            size = max(capacity, asked.get(row, self.lengths[row]) + 1)
            if (len(taken) + 1) * size <= self.positions:
                taken.append(row)
                capacity = size
        chosen = set(taken)
        arriving = [row for row in taken if self.slot[row] < 0]
        for row in resident:
            if row not in chosen:
                self.slot[row] = -1
                self.rollback(row, 0)
        self._place(taken, capacity)
        for row in arriving:
            self.credit[row] = 2 * asked[row]
        for row in rows:
            if row in chosen:
                self.served[row] = self.clock
        return [row in chosen for row in rows]

    def _place(self, rows: list[int], capacity: int) -> None:
        """Give each of `rows` a slot in buffers of at least `capacity` positions; resident rows keep their data."""
        slots, current = self.keys[0].shape[0], self.capacity
        if len(rows) <= slots and capacity <= current:
            free = sorted(set(range(slots)).difference(self.slot[row] for row in rows), reverse=True)
            for row in rows:
                if self.slot[row] < 0:
                    self.slot[row] = free.pop()
            return
        slots, capacity = self._shape(len(rows), capacity)
        # Resident rows move in slot order to the first new slots: runs of adjacent slots move as one slice.
        kept = sorted((row for row in rows if self.slot[row] >= 0), key=self.slot.__getitem__)
        runs: list[list[int]] = []  # [new slot, old slot, count]
        for new, row in enumerate(kept):
            if runs and runs[-1][1] + runs[-1][2] == self.slot[row]:
                runs[-1][2] += 1
            else:
                runs.append([new, self.slot[row], 1])
        span = min(max((self.lengths[row] for row in kept), default=0), capacity - 1)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                grown = self._empty(slots, capacity)
                for new, old, count in runs:
                    grown[new : new + count, :, :span].copy_(buf[old : old + count, :, :span])
                buffers[i] = grown
        for new, row in enumerate(kept + [row for row in rows if self.slot[row] < 0]):
            self.slot[row] = new
            self.rollback(row, min(self.lengths[row], capacity - 1))

    def _shape(self, rows: int, capacity: int) -> tuple[int, int]:
        """Buffer (slots, capacity) for at least `rows` x `capacity` within the budget: a dimension that
        must grow doubles where that fits (fewer resizes), else grows just enough."""
        slots, current = self.keys[0].shape[0], self.capacity
        new_capacity = current if capacity <= current else max(capacity, min(2 * current, self.positions // rows))
        new_slots = slots if rows <= slots else max(rows, min(2 * slots, self.positions // new_capacity))
        if new_slots * new_capacity > self.positions:
            new_capacity = max(capacity, self.positions // new_slots)
        if new_slots * new_capacity > self.positions:
            new_slots = self.positions // new_capacity
        return new_slots, new_capacity

    # -- one forward -----------------------------------------------------------------------------------
    def prepare(self, rows: list[int], new_counts: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As `RaggedKVCache.prepare`; the rows must be resident. Fed tokens use up protection."""
        for row, count in zip(rows, new_counts):
            self.credit[row] -= count
        return super().prepare(rows, new_counts, width)

    def _slots(self, rows: list[int]) -> list[int]:
        slots = [self.slot[row] for row in rows]
        assert all(slot >= 0 for slot in slots), "reserve() must make the rows resident before the forward"
        return slots

    def _reserve(self, needed: int) -> None:
        assert needed + 1 <= self.capacity, "reserve() must make room before the forward"
