"""Turn actors by name: who writes each turn of an episode (cocos.rollout).

    actor = make_actor("self-refine", policy, settings, {"feedback_tokens": 256})

`ACTORS` maps a name to "module:factory"; a factory is called as factory(policy, settings, **options) and returns an
object with `write(problems, histories, sampling) -> list[Draft]`. A name not in the registry may be a
"module:factory" path itself, so a baseline kept outside the package runs through `cocos eval --actor` unchanged.
Adding a baseline: one module in this folder, one entry here, one config (configs/).
"""

from __future__ import annotations

import importlib

from cocos.errors import UserError

ACTORS = {
    "policy": "cocos.rollout:PolicyActor",  # the model writes every turn itself (CoCoS, SCoRe, boost, Turn-SFT)
    "self-refine": "cocos.baselines.self_refine:SelfRefineActor",  # feedback, then revision (Madaan et al. 2023)
    "self-corrector": "cocos.baselines.self_corrector:SelfCorrectorActor",  # generator, then corrector (Welleck et al. 2023)
    "revise": "cocos.baselines.revise:ReviseActor",  # refine after a self-verdict (Lee et al. 2025)
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
