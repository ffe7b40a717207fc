"""The log-prob passes: sequences (prompt ids + completion ids) -> log pi_T of each completion token.

Two ways, same numbers (tests/test_passes.py holds their log-probs and gradients equal):

- `plain`: left-padded batches of whole sequences (objective.pad_sequences + objective.token_logprobs).
- `shared-prefix`: sequences that start with the same prompt tokens (the k samples of a problem: their turn-1
  prompt, with its few-shot examples, is identical; their turn-2 prompts share the task statement) run the common
  prefix once, batch 1, and the k suffixes (rest of the prompt + completion) against its keys and values, expanded
  to k rows. The prefix is computed with gradient, so the loss's gradient flows through it as through k copies.

The prefix stops at least one token before the shortest prompt: the last prompt token's logits predict the first
completion token, so it belongs to the suffix.
"""

from __future__ import annotations

import torch

from cocos.train.objective import pad_sequences, token_logprobs


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
    cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache  # its logits predict no trained token
    from transformers import DynamicCache

    shared = DynamicCache([(layer.keys.expand(B, -1, -1, -1), layer.values.expand(B, -1, -1, -1))
                           for layer in cache.layers])
    ids, attn, _, cmask = (x.to(device) for x in pad_sequences([p[n:] for p in prompts], completions, pad_id))
    position_ids = n + (attn.cumsum(-1) - 1).clamp(min=0)  # the suffix continues the prefix's positions
    attention_mask = torch.cat([torch.ones(B, n, dtype=attn.dtype, device=device), attn], dim=1)
    logp, ent = token_logprobs(model, ids, attention_mask, position_ids, cmask.shape[1], temperature=temperature,
                               with_entropy=with_entropy, cache=shared)
    return logp, ent, cmask
