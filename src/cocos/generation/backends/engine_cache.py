"""The rollout engine's KV cache (cocos.generation.backends.engine): the prefix pool (one entry per prompt being
sampled, kept by the engine across generate calls), the running sequences' own cache (one row each), and how many
of each fit the memory budget (`plan`).

Layout: K stored transposed ([layers, n, kv heads, head_dim, length]) and V as [.., length, head_dim]: scores are
then q @ K and outputs p @ V without a transpose, and the kernel's inner loops run along contiguous positions (K)
and dimensions (V). The torch path reads the whole allocated length (masked), so its batched matmuls get whole
tensors (a strided slice would be copied first); the own cache therefore grows in chunks (the engine's _OWN_CHUNK
tokens) instead of being max_new_tokens long. The kernel reads true lengths. Running sequences are kept in rows
0..B-1 and live pool entries in 0..P-1 (the scheduler moves the last one into a hole), so attention reads
contiguous tensors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class KVShape(NamedTuple):
    """What one cached position is made of: every layer's K and V of every KV head."""

    n_layers: int
    n_kv: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        return self.n_layers * 2 * self.n_kv * self.head_dim * torch.finfo(self.dtype).bits // 8

    def zeros(self, n: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V for n entries (or rows) of `length` positions. Zeros: masked positions must not hold NaN (0 * NaN
        would leak through p @ V)."""
        k = torch.zeros(self.n_layers, n, self.n_kv, self.head_dim, length, dtype=self.dtype)
        v = torch.zeros(self.n_layers, n, self.n_kv, length, self.head_dim, dtype=self.dtype)
        return k, v


def plan(shape: KVShape, budget: int, max_batch: int, n_seqs: int, n_groups: int, max_prompt: int,
         max_new: int) -> tuple[int, int, int, int]:
    """Slots S (rows decoding at once), pool entries P and their lengths (pre_len, own_len), within `budget` bytes."""
    per_tok = shape.bytes_per_token
    pre_len = -(-max_prompt // 32) * 32  # multiples of 32: the kernel reads whole blocks of 32 positions
    own_len = -(-max(1, max_new) // 32) * 32
    slots = min(max_batch, n_seqs)
    while slots > 1 and slots * own_len * per_tok + pre_len * per_tok > budget:
        slots //= 2
    entries = min(slots, n_groups, max(1, (budget - slots * own_len * per_tok) // (pre_len * per_tok)))
    return slots, entries, pre_len, own_len


class KVCache:
    """One generate call's cache: the prefix pool (k_pre, v_pre: entries x pre_len) and the own cache (k_own, v_own:
    slots x the generated length so far, grown by `reserve` `chunk` positions at a time, up to own_len)."""

    def __init__(self, shape: KVShape, pool: tuple[torch.Tensor, torch.Tensor], slots: int, own_len: int, chunk: int):
        self.shape, self.own_len, self.chunk = shape, own_len, chunk
        self.k_pre, self.v_pre = pool
        self.k_own, self.v_own = shape.zeros(slots, min(chunk, own_len))

    @property
    def pre_len(self) -> int:
        return self.k_pre.shape[-1]

    def copy_entry(self, src: int, dst: int, n_tok: int) -> None:
        """Pool entry dst takes the first n_tok positions of entry src (a shared prompt prefix, or a moved entry)."""
        self.k_pre[:, dst, ..., :n_tok] = self.k_pre[:, src, ..., :n_tok]
        self.v_pre[:, dst, :, :n_tok] = self.v_pre[:, src, :, :n_tok]

    def move_row(self, src: int, dst: int, n_tok: int) -> None:
        """Own-cache row dst takes the first n_tok positions of row src."""
        self.k_own[:, dst, ..., :n_tok] = self.k_own[:, src, ..., :n_tok]
        self.v_own[:, dst, :, :n_tok] = self.v_own[:, src, :, :n_tok]

    def reserve(self, need: int) -> None:
        """Make the own cache hold at least `need` positions (it grows by one chunk, up to own_len)."""
        old = self.k_own.shape[-1]
        if need <= old:
            return
        k, v = self.shape.zeros(self.k_own.shape[1], min(self.own_len, old + self.chunk))
        k[..., :old] = self.k_own
        v[..., :old, :] = self.v_own
        self.k_own, self.v_own = k, v
