"""What every generation backend shares: the `Generation` record, the `Sampling` settings, and the rules for
prompt ids (BOS), EOS ids and stop strings, so that every backend encodes, stops and trims identically.

- `completion_ids` are exactly the sampled tokens up to and including the token that completed the first stop
  string (or the EOS token); `text` is their decoding (special tokens skipped), cut right after the stop string.
- Sampling uses top-k off (only temperature and top-p); temperature 0 is greedy.
- `n` samples of each prompt: a generate call returns len(prompts) * n Generations, the n of a prompt together, in
  the prompts' order (`repeat_each` lays out anything else per prompt the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cocos.errors import UserError


@dataclass
class Generation:
    text: str  # decoded completion, up to and including the stop string
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)  # exactly the tokens sampled (for log-probs)
    finish_reason: str = "length"  # "stop" | "eos" | "length"
    # log-prob of each completion token under the distribution it was sampled from: softmax(logits / T)
    # (softmax(logits) when greedy), before any top-p truncation; one per completion_ids entry. The
    # trainer's recomputed log-probs must equal these (tests/test_onpolicy.py); None if the backend can't.
    logprobs: list[float] | None = None


@dataclass(frozen=True)
class Sampling:
    """The sampling settings every backend takes, checked here once (a UserError names the field); it travels whole
    from the rollout to the backend. Empty stop strings are dropped."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # reproducible samples for the same prompts, without touching the global RNG
    stop: tuple[str, ...] = ("[DONE]",)

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(s for s in (self.stop or ()) if s))
        if self.temperature < 0:
            raise UserError(f"temperature: must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")


def repeat_each(items, n: int) -> list:
    """Each item n times in a row: [a, b] -> [a, a, b, b] for n=2 (the layout of n samples per prompt)."""
    return [x for x in items for _ in range(n)]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt -> ids as every backend feeds them (BOS added by the tokenizer unless already there)."""
    bos = tokenizer.bos_token
    add_special = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add_special).input_ids


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """`encode_prompt` of each prompt; an empty one is a UserError."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    if any(not ids for ids in encoded):
        raise UserError("prompts: an empty prompt has no tokens to condition on; pass non-empty text")
    return encoded


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a completion: the generation config's EOS ids and the tokenizer's, sorted."""
    ids = set()
    for e in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(e, int):
            ids.add(e)
        elif e:
            ids.update(int(x) for x in e)
    return sorted(ids)


def stop_end(text: str, stop) -> int | None:
    """End offset of the earliest stop string in `text`, or None."""
    hits = [text.find(s) + len(s) - 1 for s in stop if s and s in text]  # index of its last char
    return min(hits) + 1 if hits else None


def trim_completion(tokenizer, ids, stop=("[DONE]",), eos_token_ids=()) -> tuple[str, list[int], str]:
    """Generated token ids (possibly running past the end, possibly padded) -> (text, ids, finish_reason).

    The completion ends at whichever comes first: the token that completes the first stop string
    (finish "stop"; `text` is cut right after the stop string, `ids` keep that whole token), or the
    first EOS token (finish "eos"; kept in `ids`, not in `text`). Otherwise everything ("length").
    """
    ids = [int(i) for i in ids]
    eos = set(int(e) for e in eos_token_ids)
    end = next((i for i, t in enumerate(ids) if t in eos), None)
    body = ids if end is None else ids[:end]

    def decode(n: int) -> str:
        return tokenizer.decode(body[:n], skip_special_tokens=True, clean_up_tokenization_spaces=False)

    text = decode(len(body))
    if stop_end(text, stop) is not None:
        # Smallest prefix of tokens whose decoding contains a stop string (binary search: containing
        # one is monotone in the prefix length).
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            if stop_end(decode(mid), stop) is not None:
                hi = mid
            else:
                lo = mid + 1
        text = decode(lo)
        return text[: stop_end(text, stop)], body[:lo], "stop"
    if end is not None:
        return text, ids[: end + 1], "eos"
    return text, body, "length"
