"""The shipped configs: each RL ablation is the CPU config (`base:`) plus the one thing it changes; the Self-Refine
config is eval options."""

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
    # the two that equal the base name their swept value all the same
    named = {"cocos_gamma0.5.yaml": {"gamma": 0.5},
             "cocos_trajectory.yaml": {"mode": "trajectory", "train_turns": "all"}}
    for name, diff in expect.items():
        got = asdict(load_config(CONFIGS / name))
        assert {k: v for k, v in got.items() if base[k] != v} == diff, name
        # layered, not copied: the file holds its base and the values it names (its diff, or the swept value itself)
        assert yaml.safe_load((CONFIGS / name).read_text()) == {"base": "cocos_cpu.yaml", **(diff or named[name])}, name


def test_base_layers_files_base_first(tmp_path):
    """`base:` is read relative to the file, may itself be layered, and the file's own values win; --set wins over
    both."""
    from cocos.config import read_config_file

    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("k: 4\nlr: 1.0e-5\ngamma: 0.5\n")
    (tmp_path / "mid.yaml").write_text("base: root.yaml\nk: 8\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("base: ../mid.yaml\ngamma: 2.0\n")
    assert read_config_file(tmp_path / "sub" / "leaf.yaml") == {"k": 8, "lr": 1.0e-5, "gamma": 2.0}
    cfg = load_config(tmp_path / "sub" / "leaf.yaml", ["k=2"])
    assert (cfg.k, cfg.lr, cfg.gamma) == (2, 1.0e-5, 2.0)


def test_base_cycle_and_missing_base_are_user_errors(tmp_path):
    import pytest

    from cocos.config import read_config_file
    from cocos.errors import UserError

    (tmp_path / "a.yaml").write_text("base: b.yaml\nk: 2\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError, match="cycle") as e:
        read_config_file(tmp_path / "a.yaml")
    assert str(e.value).count("a.yaml") == 3 and "b.yaml" in str(e.value)  # a -> b -> a, named by --config a
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        read_config_file(tmp_path / "self.yaml")
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(UserError, match=r"nowhere\.yaml \(named by .*lost\.yaml\): no such file"):
        read_config_file(tmp_path / "lost.yaml")
    (tmp_path / "bad.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(UserError, match="base: expected the path"):
        read_config_file(tmp_path / "bad.yaml")


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


def test_trained_baselines_share_the_rollout_record():
    """configs/self_corrector.yaml and configs/revise.yaml keep their field names; the sampling fields are
    RolloutSettings' (declared and checked there once), with the own answers' first-turn, paper-format values."""
    import pytest

    from cocos.baselines.revise.train import load_revise_config
    from cocos.baselines.self_corrector.train import load_self_corrector_config
    from cocos.episodes.records import RolloutSettings
    from cocos.errors import UserError

    for load, name in ((load_self_corrector_config, "self_corrector.yaml"), (load_revise_config, "revise.yaml")):
        cfg = load(CONFIGS / name)
        assert isinstance(cfg, RolloutSettings)
        assert cfg.rollout_settings() == RolloutSettings(turns=1, temperature=0.9, max_new_tokens=512), name
        with pytest.raises(UserError, match=r"timeout: must be above 0"):  # RolloutSettings' check
            load(CONFIGS / name, ["timeout=0"])
        with pytest.raises(UserError, match=r"prompt_format: .* stays 'paper'"):
            load(CONFIGS / name, ["prompt_format=chat"])
        with pytest.raises(UserError, match=r"samples: above 1 needs temperature"):
            load(CONFIGS / name, ["temperature=0"])
