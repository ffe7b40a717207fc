"""Loading models and generating text.

Contract shared by rollout, eval and the trainer (implementation: issue 3 for loading + HF backend,
issue 6 for the fast engine):

    policy = load_policy("smollm2-135m" | HF id | local path, dtype="float32"|"bfloat16"|"auto", device=None,
                         backend="auto"|"hf"|"engine"|"vllm")
    policy.model      # the live torch module (the trainer optimises exactly this object)
    policy.tokenizer  # HF tokenizer
    policy.generate(prompts: list[str], *, max_new_tokens=512, temperature=0.0, top_p=1.0,
                    seed: int | None = None, stop: tuple[str, ...] = ("[DONE]",)) -> list[Generation]

Prompts are final strings (any chat template is already applied by `cocos.prompts`). temperature 0 is
greedy. Generation stops at the first stop string or EOS; the stop string is kept in `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Generation:
    text: str  # decoded completion, up to and including the stop string
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)  # exactly the tokens sampled (for log-probs)
    finish_reason: str = "length"  # "stop" | "eos" | "length"
