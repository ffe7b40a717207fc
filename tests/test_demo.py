"""`cocos demo` end to end on a tiny saved model and the real MBPP data: before eval, training, after eval,
the before/after table and demo_summary.json."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import save_tiny_model  # noqa: E402

from cocos.demo import estimate_seconds, run_demo  # noqa: E402
from cocos.errors import UserError  # noqa: E402


def test_demo_runs_end_to_end_and_writes_its_summary(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "demo"
    summary = run_demo(out=str(out), model=str(model), max_steps=1, problems_per_step=2, k=2, eval_limit=2,
                       max_new_tokens=8, overrides=["autocast=none", "tensorboard=false"], progress=False)
    printed = capsys.readouterr().out
    assert "cocos demo: (1) evaluate" in printed and "Expected time" in printed  # says what and how long first
    assert "before vs after training" in printed and "acc@1" in printed
    on_disk = json.loads((out / "demo_summary.json").read_text())
    assert on_disk["steps"] == 1 and on_disk["n_eval_problems"] == 2
    assert set(on_disk["before"]) == set(on_disk["after"]) and "delta(1,2)" in on_disk["before"]
    assert len(on_disk["train_reward_curve"]["reward@1"]) == 1
    assert (out / "eval" / "step_0" / "metrics.json").exists() and (out / "eval" / "step_1" / "metrics.json").exists()
    assert Path(summary["checkpoint"], "config.json").exists()
    with pytest.raises(UserError, match="eval-limit"):
        run_demo(out=str(tmp_path / "d2"), model=str(model), eval_limit=0)


def test_demo_time_estimate_grows_with_the_work():
    from cocos.demo import DEMO_CONFIG, DEMO_DEFAULTS
    from cocos.train.config import build_config

    small = estimate_seconds(build_config(dict(DEMO_CONFIG, **DEMO_DEFAULTS)))
    big = estimate_seconds(build_config(dict(DEMO_CONFIG, **{**DEMO_DEFAULTS, "max_steps": 2 * DEMO_DEFAULTS["max_steps"]})))
    assert 0 < small["total"] < big["total"] and big["train"] == pytest.approx(2 * small["train"])
