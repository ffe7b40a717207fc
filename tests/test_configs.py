"""The shipped configs: each RL ablation changes one thing of the CPU config; the Self-Refine config is eval options."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from cocos.evaluate import EvalConfig
from cocos.train.config import load_config

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
    sr = yaml.safe_load((CONFIGS / "self_refine.yaml").read_text())
    EvalConfig(out="x", **{k: v for k, v in sr.items() if k != "feedback_tokens"})  # a TypeError names a stray field
