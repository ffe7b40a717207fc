"""curriculum_from: a run trains on the kept ids of another run's curriculum.json, without sampling its own."""

import json
from types import SimpleNamespace

import pytest

from cocos.errors import UserError
from cocos.rl import curriculum
from cocos.rl.config import TrainConfig


def fake_run(out, **cfg):
    """keep_problems' arguments for a run of three problems whose sampling must not happen."""
    def no_sampling(*a, **k):
        raise AssertionError("curriculum_from must not sample")

    problems = [SimpleNamespace(task_id=t) for t in (601, 602, 603)]
    return dict(cfg=TrainConfig(model="tiny", **cfg), problems=problems, out=out, sample=no_sampling, is_main=True)


def test_curriculum_from_reuses_kept_ids(tmp_path, capsys):
    src = tmp_path / "shared" / "curriculum.json"
    src.parent.mkdir()
    src.write_text(json.dumps({"k": 4, "rule": "partial", "problems": 3, "kept": ["602", "603", "999"]}))
    run = fake_run(tmp_path / "run", curriculum_k=4, curriculum_from=str(src))
    assert [p.task_id for p in curriculum.keep_problems(**run, resume=False)] == [602, 603]
    copied = json.loads((tmp_path / "run" / "curriculum.json").read_text())
    assert copied["kept"] == ["602", "603", "999"] and copied["from"] == str(src)
    printed = capsys.readouterr().out
    assert "1 kept id(s)" in printed  # 999 is not a training problem of this run
    assert "passed the partial rule over 4" in printed  # the file's rule, not the config's default (variance)
    # a resumed run reads its own copy, even if the source has gone
    src.unlink()
    assert [p.task_id for p in curriculum.keep_problems(**run, resume=True)] == [602, 603]


def test_curriculum_from_errors(tmp_path):
    run = fake_run(tmp_path / "run", curriculum_k=4, curriculum_from=str(tmp_path / "nope.json"))
    with pytest.raises(UserError, match="curriculum_from: .*does not exist"):
        curriculum.keep_problems(**run, resume=False)
    (tmp_path / "bad.json").write_text("[1, 2]")
    run = fake_run(tmp_path / "run2", curriculum_k=4, curriculum_from=str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="not a curriculum.json"):
        curriculum.keep_problems(**run, resume=False)
    with pytest.raises(UserError, match="curriculum_from: .*curriculum_k"):
        TrainConfig(model="tiny", curriculum_from="x.json")


def test_curriculum_rules_for_correction():
    """variance keeps problems whose turn-1 rewards differ; partial keeps those with something for turn 2 to fix and
    something the model can do: a failed test somewhere and a passed test somewhere."""
    cases = {  # rewards of 4 samples -> (variance, partial)
        (0.0, 0.0, 0.0, 0.0): (False, False),  # never touched
        (1.0, 1.0, 1.0, 1.0): (False, False),  # always solved
        (1 / 3, 1 / 3, 1 / 3, 1 / 3): (False, True),  # the same partial answer every time
        (0.0, 0.0, 1.0, 0.0): (True, True),  # solved sometimes
        (1.0, 1.0, 2 / 3, 1.0): (True, True),
    }
    for rewards, (variance, partial) in cases.items():
        assert curriculum.RULES["variance"](list(rewards)) is variance, rewards
        assert curriculum.RULES["partial"](list(rewards)) is partial, rewards
    with pytest.raises(UserError, match="curriculum_rule: must be one of variance, partial"):
        TrainConfig(model="tiny", curriculum_rule="hard")


def test_rule_signal_and_a_curriculum_from_two_turn_samples():
    def sample(tid, r1, r2):
        return {"task_id": tid, "turns": [{"reward": r1}, {"reward": r2}]}

    samples = [sample(1, 1 / 3, 1.0), sample(1, 1 / 3, 1 / 3),  # partial only; turn 2 differs, one improves
               sample(2, 0.0, 0.0), sample(2, 1.0, 1.0),  # both rules; turn 2 differs
               sample(3, 0.0, 0.0), sample(3, 0.0, 0.0)]  # neither
    t = curriculum.rule_signal(samples)
    assert t["all"]["kept"] == 3 and t["variance"]["kept"] == 1 and t["partial"]["kept"] == 2
    assert t["variance"]["turn2_signal"] == 1.0 and t["variance"]["turn1_signal"] == 1.0
    assert t["partial"]["turn2_signal"] == 1.0 and t["partial"]["turn1_signal"] == 0.5
    assert t["partial"]["turn2_improves"] == 0.25 and t["all"]["turn2_signal"] == pytest.approx(2 / 3)
    cur = curriculum.curriculum_from_samples(samples, "partial")
    assert cur["kept"] == ["1", "2"] and cur["k"] == 2 and cur["rule"] == "partial" and cur["problems"] == 3


def test_rule_signal_rescored_under_the_binary_reward():
    def sample(tid, p1, p2):  # tests passed of 3 at turn 1 and turn 2, recorded with progressive rewards
        return {"task_id": tid, "turns": [{"reward": p1 / 3, "passed": p1, "total": 3},
                                          {"reward": p2 / 3, "passed": p2, "total": 3}]}

    samples = [sample(1, 1, 3), sample(1, 1, 1),  # progressive: partial, turn 2 differs; binary: turn 1 all 0
               sample(2, 3, 3), sample(2, 0, 2)]  # both: turn 1 differs; binary turn 2: 1 vs 0
    binary = curriculum.rule_signal(samples, "binary")
    assert binary["partial"]["kept"] == 1 and curriculum.rule_signal(samples)["partial"]["kept"] == 2
    assert binary["all"]["turn2_signal"] == 1.0 and binary["all"]["turn2_improves"] == 0.25
    cur = curriculum.curriculum_from_samples(samples, "variance", "binary")
    assert cur["kept"] == ["2"] and cur["reward"] == "binary" and cur["turn1_rewards"]["1"] == [0.0, 0.0]
    assert "reward" not in curriculum.curriculum_from_samples(samples, "variance")
