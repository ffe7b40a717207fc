"""The rollout engine's scheduler (cocos.generation.backends.engine): its records and which sequences decode now.

- `Sequence`: one sample being generated (sample j of prompt i of the call is sequence i * n + j);
- `PromptGroup`: a prompt and its waiting sequences (the n samples of a request, and those of any other request
  with the same prompt): prefilled once into a prefix pool entry, read by all of them at decode time;
- `Scheduler`: admission of waiting groups into free pool entries (a prompt that starts like one already in the
  pool copies that prefix's KV instead of computing it) and of their sequences into free rows; when sequences finish,
  their rows and finished groups' entries are freed, the last row / entry moving into the hole.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import torch

from cocos.generation.backends.engine_cache import KVCache

PREFILL_BATCH_TOKENS = 512  # prompts admitted together are prefilled in batches of about this many tokens


class PromptGroup:
    """One distinct prompt (its ids) and the sequences that sample from it."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        self.waiting: deque[Sequence] = deque()  # sequences not admitted yet
        self.entry = -1  # prefix pool entry while prefilled
        self.active = 0  # rows decoding now
        self.logits = None  # last-position logits, kept until every sequence has been admitted


@dataclass(eq=False)
class Sequence:
    index: int  # its place in the call's output
    group: PromptGroup
    tokens: list[int] = field(default_factory=list)  # sampled so far
    logprobs: list[float] = field(default_factory=list)  # the sampler's log-prob of each (Generation.logprobs)
    finish: str = "length"  # "eos" | "stop" once it ended on one


def make_sequences(prompts: list[str], encoded: dict[str, list[int]], n: int) -> tuple[list[Sequence],
                                                                                      list[PromptGroup]]:
    """n sequences per prompt, in output order, and the groups in order of first use (one per distinct prompt: the
    requests of a repeated prompt share its prefill, as k copies of a turn-2 prompt do)."""
    groups: dict[str, PromptGroup] = {}
    seqs: list[Sequence] = []
    for prompt in prompts:
        g = groups.get(prompt)
        if g is None:
            g = groups[prompt] = PromptGroup(encoded[prompt])
        for _ in range(n):
            seqs.append(Sequence(len(seqs), g))
            g.waiting.append(seqs[-1])
    return seqs, list(groups.values())


@dataclass
class Prefill:
    group: PromptGroup
    cached: int  # leading positions copied from `source`'s entry instead of computed
    source: PromptGroup | None = None


@dataclass
class Admission:
    batches: list[list[Prefill]]  # to prefill in order: a batch may reuse a prefix an earlier one computes
    admitted: list[tuple[PromptGroup, list[Sequence]]]  # sequences that take rows now, by group


class Scheduler:
    """The waiting groups, the prefix pool (entry -> group) and the running sequences (row -> sequence), with each
    row's own-cache length `own` and next input token `nxt` as tensors for the decode step."""

    def __init__(self, groups: list[PromptGroup], cache: KVCache, slots: int, entries: int, min_shared_prefix: int):
        self.cache, self.slots, self.entries, self.min_shared_prefix = cache, slots, entries, min_shared_prefix
        self.waiting = deque(groups)
        self.pool: list[PromptGroup] = []
        self.running: list[Sequence] = []
        self.own = torch.zeros(0, dtype=torch.long)
        self.nxt = torch.zeros(0, dtype=torch.long)
        self.layout = None  # the runner's index tensors for this batch composition (None: to rebuild)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self) -> Admission:
        """Waiting groups into free pool entries, their sequences into free rows (a group may take fewer rows than
        it has sequences; the rest wait for rows to free up)."""
        batches, pending, admitted, free = [], [], [], self.slots - len(self.running)
        while self.waiting and free > 0:
            g = self.waiting[0]
            if g.entry < 0:
                if len(self.pool) >= self.entries:
                    break
                source, cached = self._shared_prefix(g)
                # the prefix to share must be computed first; or the batch is large
                if pending and (cached and any(source is p.group for p in pending)
                                or sum(len(p.group.ids) for p in pending) >= PREFILL_BATCH_TOKENS):
                    batches, pending = batches + [pending], []
                g.entry = len(self.pool)
                self.pool.append(g)
                pending.append(Prefill(g, cached, source if cached else None))
            take = min(len(g.waiting), free)
            free -= take
            admitted.append((g, [g.waiting.popleft() for _ in range(take)]))
            if not g.waiting:
                self.waiting.popleft()
        return Admission(batches + [pending] if pending else batches, admitted)

    def _shared_prefix(self, g: PromptGroup) -> tuple[PromptGroup | None, int]:
        """The pool's group sharing the longest prompt prefix with g, and how many positions g may copy from it
        (0 below min_shared_prefix: recomputing a short prefix is cheap, and keeps HF's unmasked attention call)."""
        best, cached = None, 0
        for other in self.pool:
            c = len(os.path.commonprefix([other.ids, g.ids]))
            if c > cached:
                best, cached = other, c
        cached = min(cached, len(g.ids) - 1)
        return best, cached if cached >= self.min_shared_prefix else 0

    def admitted(self, g: PromptGroup) -> None:
        """After g's admitted sequences drew their first tokens: drop its logits once all are in, and its entry
        once none of them runs (each may have ended at its first token)."""
        if not g.waiting:
            g.logits = None
            if g.active == 0:
                self._release(g)

    def join(self, seqs: list[Sequence], first_tokens: list[int]) -> None:
        """Sequences that go on after their first token take the next rows."""
        if seqs:
            self.running += seqs
            self.own = torch.cat([self.own, torch.zeros(len(seqs), dtype=torch.long)])
            self.nxt = torch.cat([self.nxt, torch.tensor(first_tokens, dtype=torch.long)])
            self.layout = None

    def finish(self, rows: list[int]) -> None:
        """Free the rows of finished sequences (ascending): the last row moves into each hole."""
        for b in reversed(rows):
            g, last = self.running[b].group, len(self.running) - 1
            if b != last:
                self.cache.move_row(last, b, int(self.own[last]))
                self.running[b] = self.running[last]
                self.own[b], self.nxt[b] = self.own[last], self.nxt[last]
            self.running.pop()
            self.own, self.nxt = self.own[:last], self.nxt[:last]
            g.active -= 1
            if g.active == 0 and not g.waiting:
                self._release(g)
        self.layout = None

    def _release(self, g: PromptGroup) -> None:
        e, last = g.entry, len(self.pool) - 1
        if e != last:  # keep live entries in 0..P-1: move the last one into the hole
            moved = self.pool[last]
            self.cache.copy_entry(last, e, len(moved.ids))
            moved.entry, self.pool[e] = e, moved
        self.pool.pop()
        g.entry = -1
