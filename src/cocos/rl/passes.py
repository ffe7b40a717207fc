"""The log-prob passes of an RL step: trained sequences (prompt ids + completion ids) -> log pi_T of each completion
token under the policy and the reference -> per-turn KL, advantages, and the backward of the loss
(cocos.rl.objective holds the math; the trainer calls `plain_passes` or `grouped_passes`).

The passes take the advantages as a function, `advantages(rewards [m, T], turn_kl [m, T]) -> [m, T]` for m
trajectories in whole groups of k (the batch's `advantages_of`: objective.advantages with the config's advantage
and the step's method), since the KL they need is what the passes measure. Each trained sequence, turn t of
trajectory i, is weighted by A[i, t]; the passes return A (in `Measured`, cocos.rl.batch), so that the log reads
the numbers the loss used. They take no trainer: a `PassSetup` (the models, the processes' autocast and backward,
plain values of the config) and the batch's sequences and rewards.

Two ways, same numbers (tests/test_passes.py holds their log-probs and gradients equal):

- `plain`: left-padded micro-batches of whole sequences, three passes: reference and policy without gradient (the
  KL, hence the advantages), then the policy with gradient.
- `shared-prefix`: sequences that start with the same prompt tokens (the k samples of a problem: their turn-1
  prompt, with its few-shot examples, is identical; their turn-2 prompts share the task statement) run the common
  prefix once, batch 1, and the k suffixes (rest of the prompt + completion) against its keys and values, expanded
  to k rows. The prefix is computed with gradient, so the loss's gradient flows through it as through k copies.
  `grouped_passes` runs a group of k trajectories at a time: one policy pass with gradient (its detached log-probs
  give the KL), one reference pass, then the group's advantages and one backward: two passes instead of three.

The prefix stops at least one token before the shortest prompt: the last prompt token's logits predict the first
completion token, so it belongs to the suffix.

Under gradient checkpointing (the config's `gradient_checkpointing`, cocos.rl.models), the prefix runs unchecked (it
writes its cache, once) and the suffix's layers recompute against a read-only copy of it (`prefix_cache`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from cocos.rl import objective
from cocos.rl.batch import Measured
from cocos.rl.objective import pad_sequences, token_logprobs


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common prefix of `prompts`, capped one below the shortest prompt."""
    cap = min(len(p) for p in prompts) - 1
    n = 0
    while n < cap and all(p[n] == prompts[0][n] for p in prompts[1:]):
        n += 1
    return n


def sequence_logprobs(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int, device, *,
                      temperature: float, with_entropy: bool = False, share_prefix: bool = True):
    """log pi_T of each completion token of each sequence -> (logp [B, C], entropy [B, C] or None, mask [B, C]),
    completions right-aligned over the last C = max completion length positions (mask marks real tokens).
    With share_prefix, the sequences' common prompt prefix runs once (see the module docstring)."""
    n = common_prefix_length(prompts) if share_prefix and len(prompts) > 1 else 0
    if n < 2:  # nothing worth sharing: one padded batch
        ids, attn, pos, cmask = (x.to(device) for x in pad_sequences(prompts, completions, pad_id))
        logp, ent = token_logprobs(model, ids, attn, pos, cmask.shape[1], temperature=temperature,
                                   with_entropy=with_entropy)
        return logp, ent, cmask
    B = len(prompts)
    prefix = torch.tensor([prompts[0][:n]], device=device)
    with checkpointing_off(model):  # batch 1, and its cache is written: a recomputed layer would write it twice
        out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)  # its logits predict no trained token
    cache = out.get("cache") or out.get("past_key_values")
    shared = prefix_cache(cache, B)
    ids, attn, _, cmask = (x.to(device) for x in pad_sequences([p[n:] for p in prompts], completions, pad_id))
    position_ids = n + (attn.cumsum(-1) - 1).clamp(min=0)  # the suffix continues the prefix's positions
    attention_mask = torch.cat([torch.ones(B, n, dtype=attn.dtype, device=device), attn], dim=1)
    logp, ent = token_logprobs(model, ids, attention_mask, position_ids, cmask.shape[1], temperature=temperature,
                               with_entropy=with_entropy, cache=shared)
    return logp, ent, cmask


def prefix_cache(cache, batch: int):
    """The prefix's keys and values expanded to `batch` rows, read-only: each layer gets prefix + its new states,
    and nothing is stored, so a layer recomputed under gradient checkpointing sees the same prefix again (the
    layers may then keep it: `allow_checkpointing_with_prefix`)."""
    from transformers import DynamicCache

    class PrefixCache(DynamicCache):
        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            layer = self.layers[layer_idx]
            return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    return PrefixCache([(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                        for layer in cache.layers])


def checkpointed_layers(model) -> list:
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


@contextlib.contextmanager
def checkpointing_off(model):
    layers = checkpointed_layers(model)
    for m in layers:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in layers:
            m.gradient_checkpointing = True


def allow_checkpointing_with_prefix(model) -> bool:
    """Let checkpointed layers keep the shared prefix's read-only cache (transformers drops a cache under
    checkpointing unless a layer says it only reads it, `_can_checkpoint_with_cache`). False where this
    transformers has no such switch: there a checkpointed layer would drop or write the prefix."""
    layers = [m for m in checkpointed_layers(model) if hasattr(m, "_can_checkpoint_with_cache")]
    if not layers:
        return False
    for m in layers:
        m._can_checkpoint_with_cache = True
    return True


# ---- the step's passes ------------------------------------------------------------------------
@dataclass(frozen=True)
class PassSetup:
    """What the passes run with: the models (`model`, the trained policy as accelerate wrapped it, and `reference()`,
    cocos.rl.models.Models), the processes' `autocast()` and `backward(loss, last=)` (cocos.rl.distributed), and
    plain values of the run's config."""
    models: Any
    dist: Any
    pad_id: int
    device: Any
    temperature: float  # the sampling temperature: every log-prob is taken under softmax(logits / temperature)
    micro_batch: int  # sequences per padded batch (plain passes)
    kl_estimator: str  # k1 | k3 (objective.token_kl)
    k: int  # samples per problem: the trajectories come in groups of k
    turns: int


def micro_batches(setup: PassSetup, seqs):
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].prompt_ids) + len(seqs[i].completion_ids))  # less padding
    mb = setup.micro_batch
    for s in range(0, len(order), mb):
        idx = order[s:s + mb]
        batch = objective.pad_sequences([seqs[i].prompt_ids for i in idx], [seqs[i].completion_ids for i in idx],
                                        setup.pad_id)
        yield idx, tuple(x.to(setup.device) for x in batch)


@torch.no_grad()
def kl_and_entropy(setup: PassSetup, seqs, n_traj: int):
    """Per-turn KL [n_traj, T] (summed over each turn's generated tokens), mean entropy, and the trainer's
    log-prob of each sequence's completion tokens (one list per entry of `seqs`, compared with the sampler's).

    All under the sampling temperature (objective.token_logprobs), so the KL is the one between the tempered
    policy and the tempered reference, and the trainer's log-probs are the sampler's up to numerics.
    """
    kl = torch.zeros(n_traj, setup.turns)
    ent_sum, ent_n = 0.0, 0.0
    temperature, model = setup.temperature, setup.models.model
    recomputed: list[list[float] | None] = [None] * len(seqs)
    for idx, (ids, attn, pos, cmask) in micro_batches(setup, seqs):
        C = cmask.shape[1]
        with setup.dist.autocast():
            logp, ent = objective.token_logprobs(model, ids, attn, pos, C, temperature=temperature, with_entropy=True)
            with setup.models.reference() as ref:
                ref_logp, _ = objective.token_logprobs(ref, ids, attn, pos, C, temperature=temperature)
        e_sum, e_n = _record_batch(seqs, idx, logp, ref_logp, ent, cmask, setup.kl_estimator, kl, recomputed)
        ent_sum += e_sum
        ent_n += e_n
    return kl, (ent_sum / ent_n if ent_n else 0.0), recomputed


def _record_batch(seqs, idx, logp, ref_logp, ent, cmask, estimator, turn_kl, recomputed) -> tuple[float, float]:
    """Add one batch's per-sequence KL to turn_kl [n_traj, T] and each sequence's log-probs to recomputed;
    -> (entropy summed over its completion tokens, their count)."""
    seq_kl = objective.masked_sum(objective.token_kl(logp.detach(), ref_logp, estimator), cmask).cpu()
    rows, C = logp.detach().cpu(), cmask.shape[1]
    for row, i in enumerate(idx):
        turn_kl[seqs[i].traj, seqs[i].turn] += seq_kl[row]
        m = len(seqs[i].completion_ids)
        recomputed[i] = rows[row, C - m:].tolist() if m else []
    return float((ent * cmask).sum()), float(cmask.sum())


def seq_advantages(adv: torch.Tensor, seqs, idx, first_traj: int = 0) -> torch.Tensor:
    """The advantage of each sequence seqs[i], i in idx: A[traj - first_traj, turn] -> [len(idx)]."""
    return adv[[seqs[i].traj - first_traj for i in idx], [seqs[i].turn for i in idx]]


def plain_passes(setup: PassSetup, seqs, rewards, advantages, n_traj: int, last_chunk: bool = True) -> Measured:
    """Reference and policy without gradient over every sequence (the KL, hence the advantages), then the policy
    with gradient in micro-batches, one backward each."""
    turn_kl, entropy, recomputed = kl_and_entropy(setup, seqs, rewards.shape[0])
    adv = advantages(rewards, turn_kl)
    loss_total = 0.0
    for idx, (ids, attn, pos, cmask) in micro_batches(setup, seqs):
        a = seq_advantages(adv, seqs, idx).to(setup.device)
        with setup.dist.autocast():
            logp, _ = objective.token_logprobs(setup.models.model, ids, attn, pos, cmask.shape[1],
                                               temperature=setup.temperature)
        loss = objective.policy_loss(logp, cmask, a, n_traj=n_traj)
        setup.dist.backward(loss)
        loss_total += float(loss.detach())
    return Measured(turn_kl, entropy, recomputed, loss_total, adv)


def grouped_passes(setup: PassSetup, seqs, rewards, advantages, n_traj: int, last_chunk: bool = True) -> Measured:
    """Per group of k trajectories: policy log-probs with gradient and reference log-probs of every trained turn
    (one batch per turn, its common prompt prefix once), then the group's advantages and one backward (the step's
    last when it is the last group of the last chunk). Advantages 0 for groups without a trained sequence."""
    k, dist, model = setup.k, setup.dist, setup.models.model
    turn_kl = torch.zeros(rewards.shape[0], setup.turns)
    adv = torch.zeros(rewards.shape[0], setup.turns)
    recomputed: list[list[float] | None] = [None] * len(seqs)
    ent_sum = ent_n = loss_total = 0.0
    groups: dict[int, dict[int, list[int]]] = {}  # group -> turn -> indices into seqs
    for i, s in enumerate(seqs):
        groups.setdefault(s.traj // k, {}).setdefault(s.turn, []).append(i)
    last_group = max(groups, default=None)
    for g, turns in groups.items():
        held = []  # (indices, log-probs with gradient, mask) of each turn's batch
        for idx in turns.values():
            prompts, comps = [seqs[i].prompt_ids for i in idx], [seqs[i].completion_ids for i in idx]
            with dist.autocast():
                logp, ent, cmask = sequence_logprobs(model, prompts, comps, setup.pad_id, setup.device,
                                                     temperature=setup.temperature, with_entropy=True)
                with torch.no_grad(), setup.models.reference() as ref:
                    ref_logp, _, _ = sequence_logprobs(ref, prompts, comps, setup.pad_id, setup.device,
                                                       temperature=setup.temperature)
            e_sum, e_n = _record_batch(seqs, idx, logp, ref_logp, ent, cmask, setup.kl_estimator, turn_kl, recomputed)
            ent_sum += e_sum
            ent_n += e_n
            held.append((idx, logp, cmask))
        group = slice(g * k, (g + 1) * k)
        adv[group] = advantages(rewards[group], turn_kl[group])  # the group's KL is complete: its advantages
        group_adv = adv[group].to(setup.device)
        loss = sum(objective.policy_loss(logp, cmask, seq_advantages(group_adv, seqs, idx, g * k), n_traj=n_traj)
                   for idx, logp, cmask in held)
        dist.backward(loss, last=last_chunk and g == last_group)
        loss_total += float(loss.detach())
    return Measured(turn_kl, (ent_sum / ent_n if ent_n else 0.0), recomputed, loss_total, adv)
