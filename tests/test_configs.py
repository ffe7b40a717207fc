"""The shipped configs: each RL ablation changes one thing of the CPU config; the Self-Refine config is eval options."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from cocos.eval.evaluate import EvalConfig
from cocos.rl.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_ablation_configs_change_one_thing_each():
    base = asdict(load_config(CONFIGS / "cocos_cpu.yaml"))
    expect = {
        "cocos_binary.yaml": {"reward": "binary"},
        "cocos_gamma0.yaml": {"gamma": 0.0},
        "cocos_gamma0.5.yaml": {},
        "cocos_gamma1.yaml": {"gamma": 1.0},
        "cocos_gamma2.yaml": {"gamma": 2.0},
        "cocos_last_turn.yaml": {"mode": "last-turn", "train_turns": "last"},
        "cocos_trajectory.yaml": {},
    }
    for name, diff in expect.items():
        got = asdict(load_config(CONFIGS / name))
        assert {k: v for k, v in got.items() if base[k] != v} == diff, name


def test_self_refine_config_holds_eval_options_only():
    """configs/self_refine.yaml is an EvalConfig (a stray field is a UserError naming it) that picks the Self-Refine
    actor, and its actor options are the actor's own."""
    from cocos.baselines.self_refine import SelfRefineActor
    from cocos.config import build_config, read_config_file
    from cocos.episodes.actors import make_actor

    cfg = build_config({**read_config_file(CONFIGS / "self_refine.yaml"), "out": "x"}, EvalConfig)
    assert cfg.actor == "self-refine" and cfg.limit is None and cfg.temperature == 0.0
    actor = make_actor(cfg.actor, policy=None, settings=cfg.rollout_settings(), options=cfg.actor_args)
    assert isinstance(actor, SelfRefineActor) and actor.feedback_tokens == 256
