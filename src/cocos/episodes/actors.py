"""Turn actors: who writes each turn of an episode, and the registry of actors by name.

A turn actor writes turn t of a batch of episodes: `actor.write(problems, histories, sampling, n=1) -> list[Draft]`,
where histories[i] holds the earlier `Turn`s of episode i (so t = len(histories[i]) + 1), `sampling` is the
turn's `cocos.generation.sampling.Sampling` (passed on whole to `policy.generate`), and `n` asks for n samples of
each episode's turn: len(problems) * n drafts, the n of an episode together (the rollout asks where the k samples
of a problem share their history: turn 1 of trajectory mode, the last turn of last-turn mode). `n` is optional:
an actor whose `write` has no `n` parameter gets each episode n times over instead. The plain policy is one actor
(`PolicyActor`: the prompt format's prompt, one generate call); a baseline that changes who writes a turn or how is
another (`cocos.baselines`).

    actor = make_actor("self-refine", policy, settings, {"feedback_tokens": 256})

`ACTORS` maps a name to "module:factory"; a factory is called as factory(policy, settings, **options) and returns an
object with `write(problems, histories, sampling[, n]) -> list[Draft]`. A name not in the registry may be a
"module:factory" path itself, so a baseline kept outside the package runs through `cocos eval --actor` unchanged.
The factories are loaded by name when asked for: this module imports no baseline. Adding a baseline: one module
(cocos.baselines), one entry here, one config (configs/).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Protocol

from cocos.data.problems import Problem
from cocos.data.prompts import PromptBuilder
from cocos.episodes.records import Draft, RolloutSettings, Turn
from cocos.errors import UserError
from cocos.generation.sampling import Sampling, repeat_each


class Actor(Protocol):
    def write(self, problems: list[Problem], histories: list[list[Turn]], sampling: Sampling,
              n: int = 1) -> list[Draft]: ...


def takes_n(actor) -> bool:
    """Whether the actor's `write` samples n drafts per episode itself (has an `n` parameter)."""
    try:
        return "n" in inspect.signature(actor.write).parameters
    except (TypeError, ValueError):
        return False


class PolicyActor:
    """The policy writes every turn itself: the prompt format's turn-t prompt, one batched generate call."""

    def __init__(self, policy, settings: RolloutSettings):
        self.policy = policy
        self.prompts = PromptBuilder(settings.prompt_format, tokenizer=getattr(policy, "tokenizer", None),
                                     fewshot=settings.fewshot)

    def write(self, problems, histories, sampling: Sampling, n: int = 1) -> list[Draft]:
        prompts = [self.prompts(p, [h.code for h in hist]) for p, hist in zip(problems, histories)]
        gens = self.policy.generate(prompts, sampling, n=n)
        return [Draft(prompt, g) for prompt, g in zip(repeat_each(prompts, n), gens)]


# ---- actors by name -----------------------------------------------------------------------------
ACTORS = {
    "policy": "cocos.episodes.actors:PolicyActor",  # the model writes every turn itself (CoCoS, SCoRe, boost, Turn-SFT)
    "self-refine": "cocos.baselines.self_refine:SelfRefineActor",  # feedback, then revision (Madaan et al. 2023)
    # generator, then corrector (Welleck et al. 2023)
    "self-corrector": "cocos.baselines.self_corrector.actor:SelfCorrectorActor",
    "revise": "cocos.baselines.revise.actor:ReviseActor",  # refine after a self-verdict (Lee et al. 2025)
}


def make_actor(name: str, policy, settings, options: dict | None = None):
    spec = ACTORS.get(name, name)
    if ":" not in spec:
        raise UserError(f"actor: {name!r} is not one of {', '.join(ACTORS)} (or a module:factory path)")
    module, attr = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"actor: cannot load {spec!r} ({type(e).__name__}: {e}); give a module:factory path on sys.path")
    try:
        return factory(policy, settings, **(options or {}))
    except TypeError as e:
        raise UserError(f"actor_args for {name!r}: {e}")
