"""The rollout engine's sampler (cocos.generation.backends.engine): which token each sequence takes (greedy, or
temperature and top-p by inverse-CDF sampling, cocos.generation.backends.engine_ops.sample_tokens), its log-prob,
and when a sequence ends (EOS, a stop string, its token budget); finished sequences -> `Generation`s.

Reproducible whatever the batching: sequence r draws its j-th token with the uniform u[r, j], from a generator
seeded by (seed, r) (a random base seed from the global RNG when seed is None).
"""

from __future__ import annotations

import torch

from cocos.generation.backends.engine_ops import sample_tokens, sampled_logprobs
from cocos.generation.backends.engine_sched import Sequence
from cocos.generation.sampling import Generation, Sampling, stop_end


def stop_token_mask(tokenizer, vocab: int, stop: tuple[str, ...]) -> torch.Tensor:
    """Tokens whose text contains the last character of a stop string: only they can complete one."""
    lasts = {s[-1] for s in stop}
    if all(ch.isascii() for ch in lasts):
        pieces = tokenizer.batch_decode([[i] for i in range(vocab)])
        return torch.tensor([any(ch in p for ch in lasts) for p in pieces])
    return torch.ones(vocab, dtype=torch.bool)


def uniforms(n_seqs: int, sampling: Sampling) -> torch.Tensor | None:
    """u [n_seqs, max_new_tokens]: sequence r's j-th token uses u[r, j]; None when greedy (nothing is drawn)."""
    if sampling.temperature == 0:
        return None
    base = int(torch.randint(0, 2**62, ()).item()) if sampling.seed is None else int(sampling.seed)
    u = torch.zeros(n_seqs, sampling.max_new_tokens)
    for r in range(n_seqs):
        gen = torch.Generator().manual_seed((base * 6364136223846793005 + r * 1442695040888963407 + 1) % 2**63)
        u[r] = torch.rand(sampling.max_new_tokens, generator=gen)
    return u


class Sampler:
    """One generate call's sampling: `sampling`'s settings, the uniforms of its n_seqs sequences, EOS and stops."""

    def __init__(self, sampling: Sampling, n_seqs: int, tokenizer, eos: set[int], stop_mask: torch.Tensor | None,
                 kernel=None):
        self.s, self.tokenizer, self.eos, self.stop_mask, self.kernel = sampling, tokenizer, eos, stop_mask, kernel
        self.u = uniforms(n_seqs, sampling)
        self.window = max((len(s.encode()) for s in sampling.stop), default=0) + 2  # tokens that can hold a stop

    def first(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], list[float]]:
        """The first token of each of `seqs` (one prompt's samples) from the prompt's last-position logits [V]."""
        lg = logits.expand(len(seqs), -1)
        us = self.u[[s.index for s in seqs], 0] if self.u is not None else None
        tokens = sample_tokens(lg, us, self.s.temperature, self.s.top_p)
        return tokens.tolist(), sampled_logprobs(lg, tokens, self.s.temperature).tolist()

    def step(self, logits: torch.Tensor, seqs: list[Sequence],
             drawn: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """The next token of each running sequence: row b of `logits` [B, V] is seqs[b], which has drawn[b] tokens."""
        temperature = self.s.temperature
        if temperature == 0 and self.kernel is not None:
            tokens = self.kernel.argmax_rows(logits)  # = logits.argmax(-1), several times faster
        else:
            us = None if self.u is None else self.u[[s.index for s in seqs], drawn.clamp(max=self.s.max_new_tokens - 1)]
            tokens = sample_tokens(logits, us, temperature, self.s.top_p)
        return tokens, sampled_logprobs(logits, tokens, temperature).tolist()

    def append(self, seq: Sequence, token: int, logprob: float) -> bool:
        """Add a sampled token to seq; True when seq has ended (EOS, a stop string, or its token budget)."""
        ids = seq.tokens
        ids.append(token)
        seq.logprobs.append(logprob)
        if token in self.eos:
            seq.finish = "eos"
            return True
        if self.stop_mask is not None and self.stop_mask[token]:
            tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
            if any(s in tail for s in self.s.stop):
                seq.finish = "stop"
                return True
        return len(ids) >= self.s.max_new_tokens

    def generation(self, seq: Sequence) -> Generation:
        text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if seq.finish == "stop":
            text = text[: stop_end(text, self.s.stop)]
        return Generation(text=text, prompt_ids=list(seq.group.ids), completion_ids=seq.tokens,
                          finish_reason=seq.finish, logprobs=seq.logprobs)
