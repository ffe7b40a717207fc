"""The paper configuration: the `count` reward, `cocos train --print-config`, configs/cocos_paper.yaml's
decisions, and the plan `scripts/paper_comparison.sh --dry-run` prints for each budget."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cocos.cli import main as cli_main
from cocos.episodes.rewards import accumulated_reward, turn_reward
from cocos.errors import UserError
from cocos.rl.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


# ---- the authors' code's reward: the raw count of passed tests --------------------------------------
def test_count_reward_is_k_times_progressive():
    assert turn_reward(2, 3, "count") == 2.0 and turn_reward(0, 3, "count") == 0.0
    # their correction_reward on MBPP's 3 tests: gamma * c1 + (c2 - c1), three times the paper's ratio
    c = [turn_reward(1, 3, "count"), turn_reward(3, 3, "count")]
    r = [turn_reward(1, 3, "progressive"), turn_reward(3, 3, "progressive")]
    assert accumulated_reward(c, 0.5) == pytest.approx(0.5 * 1 + (3 - 1))
    assert accumulated_reward(c, 0.5) == pytest.approx(3 * accumulated_reward(r, 0.5))


def test_config_accepts_count_and_names_the_field_otherwise():
    assert TrainConfig(reward="count").reward == "count"
    assert load_config(None, ["reward=count"]).reward == "count"
    with pytest.raises(UserError, match=r"reward: must be one of progressive, binary, count"):
        load_config(None, ["reward=ratio"])


# ---- cocos train --print-config -----------------------------------------------------------------
def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "--config", str(ROOT / "configs" / "cocos_paper.yaml"), "--out", str(out),
                   "--set", "gamma=2", "--set", "reward=count", "--max-steps", "7", "--print-config"])
    assert rc == 0 and not out.exists()
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(ROOT / "configs" / "cocos_paper.yaml", ["gamma=2", "reward=count"], max_steps=7).to_dict()
    assert printed == expected and printed["gamma"] == 2.0 and printed["max_steps"] == 7
    # a bad override is the usual one-line error, exit code 2
    assert cli_main(["train", "--config", str(ROOT / "configs" / "cocos_paper.yaml"), "--out", str(out),
                     "--set", "k=1", "--print-config"]) == 2


# ---- configs/cocos_paper.yaml: the decisions its comments document ------------------------------------
def test_paper_config_decisions():
    cfg = load_config(ROOT / "configs" / "cocos_paper.yaml")
    # (a) 128 sequences per update = 64 problems x k 2 (the authors' train.py:44 and trainer.py:126-128)
    assert (cfg.problems_per_step, cfg.k, cfg.problems_per_step * cfg.k) == (64, 2, 128)
    # (b) 1,500 updates, the last checkpoint kept; validation curve every 150 updates
    assert (cfg.max_steps, cfg.eval_every, cfg.eval_split, cfg.eval_limit) == (1500, 150, "validation", None)
    # (c) the paper's pass ratio; the code's count is a --set away
    assert cfg.reward == "progressive"
    assert (cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.beta, cfg.gamma, cfg.temperature, cfg.top_p,
            cfg.max_new_tokens, cfg.turns) == (1e-5, "cosine", 0, 0.01, 0.5, 0.9, 1.0, 512, 2)
    assert not cfg.skip_uniform_groups and not cfg.fewshot and cfg.extraction == "strict"
    assert (cfg.problems_per_step // cfg.grad_accum) * cfg.grad_accum == cfg.problems_per_step


# ---- scripts/paper_comparison.sh --dry-run ----------------------------------------------------------
def dry_run(budget: str, tmp_path: Path, **env) -> str:
    e = dict(os.environ, BUDGET=budget, OUT=str(tmp_path / "out"), **env)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "paper_comparison.sh"), "--dry-run"], cwd=ROOT, env=e,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "out").exists()  # a dry run creates nothing
    return res.stdout


def resolved_configs(plan: str) -> dict[str, dict]:
    """RL run name -> the resolved config printed (indented) under its `cocos train` line."""
    out, name, lines = {}, None, []
    for line in plan.splitlines() + ["+ end"]:
        if line.startswith("    ") and name:
            lines.append(line[4:])
            continue
        if name:
            out[name] = yaml.safe_load("\n".join(lines))
            name, lines = None, []
        m = re.match(r"\+ cocos train .*--out \S+/train/(\S+) ", line)
        if m:
            name = m.group(1)
    return out


def test_paper_plan_derives_every_rl_run_from_the_paper_config(tmp_path):
    plan = dry_run("paper", tmp_path, MODEL="meta-llama/Llama-3.2-1B-Instruct")
    runs = resolved_configs(plan)
    assert set(runs) == {"score", "cocos_g0.5", "cocos_binary", "cocos_g0", "cocos_g1", "cocos_g2"}
    base = load_config(ROOT / "configs" / "cocos_paper.yaml").to_dict()
    expected_diffs = {
        "cocos_g0.5": {}, "cocos_binary": {"reward": "binary"}, "cocos_g0": {"gamma": 0.0}, "cocos_g1": {"gamma": 1.0},
        "cocos_g2": {"gamma": 2.0},
        "score": {"method": "score", "reward": "binary", "score_stage1_steps": 750, "score_beta1": 0.25},
    }
    for name, cfg in runs.items():
        diff = {k: v for k, v in cfg.items() if v != base[k] and k != "model"}
        assert diff == expected_diffs[name], name
        assert cfg["model"].endswith("/boost_model")
    assert "--set model=meta-llama/Llama-3.2-1B-Instruct" in plan  # the boost SFT starts from MODEL

    evals = [ln for ln in plan.splitlines() if ln.startswith("+ cocos eval")]
    two = [ln for ln in evals if "/eval/" in ln]
    five = [ln for ln in evals if "/eval5/" in ln]
    assert len(two) == 12 * 3 and len(evals) == len(two) + len(five)
    for ds in ("mbpp", "humaneval", "odex"):
        rows = [ln for ln in two if re.search(rf"/eval/\S+/{ds}( |$)", ln)]
        assert len(rows) == 12, ds
    # one protocol: every cocos eval line has the same settings once the model, dataset, folder and the row's turn
    # actor are taken out (Self-Refine: its config and as much room for feedback as for code; Self-Corrector: the
    # corrector samples in the same dtype; ReVISE)
    actors = {"self_refine": "--config configs/self_refine.yaml --actor-arg feedback_tokens=512 ",
              "self_corrector": "--actor self-corrector --actor-arg corrector_rollout_dtype=model ",
              "revise": "--actor revise "}
    protocols = set()
    for ln in evals:
        row = re.search(r"/eval5?/(\S+)/", ln).group(1)
        assert (actors.get(row, "") in ln) and ("--actor" not in ln) == (row not in actors), ln
        protocols.add(re.sub(r"--(model|dataset|out) \S+ ?", "", ln).replace(actors.get(row, ""), "").strip())
    protocol = "+ cocos eval --split test --turns {} --temperature 0 --max-new-tokens 512 --extraction strict --rollout-dtype model"
    assert protocols == {protocol.format(2), protocol.format(5)}
    # the turn analysis: six rows over 5 turns on MBPP, the Self-Corrector and ReVISE among them
    assert sorted(re.search(r"/eval5/(\S+)/mbpp$", ln).group(1) for ln in five) == sorted(
        ["boost", "turn_sft", "self_corrector", "revise", "score", "cocos_g0.5"])
    assert all("--turns 5 " in ln for ln in five)
    # RL rows are evaluated from their final checkpoint, not from a chosen one
    assert sum("/checkpoints/step_1500 " in ln for ln in two) == 6 * 3
    # the two trained baselines start from the boost model with their configs as they are; the eval loads each run
    sc = next(ln for ln in plan.splitlines() if ln.startswith("+ cocos self-corrector"))
    rv = next(ln for ln in plan.splitlines() if ln.startswith("+ cocos revise"))
    assert re.fullmatch(r"\+ cocos self-corrector --config configs/self_corrector.yaml --out (\S+)/self_corrector "
                        r"--set model=\1/boost_model --set extraction=strict", sc), sc
    assert re.fullmatch(r"\+ cocos revise --config configs/revise.yaml --out (\S+)/revise_model "
                        r"--set model=\1/boost_model --set extraction=strict", rv), rv
    assert all(re.search(r"--model \S+/self_corrector ", ln) for ln in evals if "--actor self-corrector" in ln)
    assert all(re.search(r"--model \S+/revise_model ", ln) for ln in evals if "--actor revise" in ln)
    # one report in the paper's layout: every evaluation, the 5-turn ones and the RL runs (curves), with the budget
    (report,) = [ln for ln in plan.splitlines() if ln.startswith("+ cocos report")]
    assert report.count("/eval/") == 36 and report.count("/eval5/") == 6 and report.count("/train/") == 6
    assert report.count("--label ") == 48 and "--budget 'paper: all problems" in report


def test_cpu_budgets_keep_their_sizes_and_share_the_protocol(tmp_path):
    plan = dry_run("tiny", tmp_path, FEWSHOT="1")
    runs = resolved_configs(plan)
    assert len(runs) == 6 and {c["gamma"] for n, c in runs.items() if n != "score"} == {0.0, 0.5, 1.0, 2.0}
    assert all(c["max_steps"] == 2 and c["problems_per_step"] == 2 and c["lr"] == 2e-5 for c in runs.values())
    evals = [ln for ln in plan.splitlines() if ln.startswith("+ cocos eval")]
    assert len([ln for ln in evals if "/eval/" in ln]) == 12 * 3 and all("--fewshot" in ln and "--limit 3 " in ln for ln in evals)
    assert sum("--config configs/self_refine.yaml" in ln for ln in evals) == 3
    assert sum("--turns 5 " in ln for ln in evals) == 4  # boost, Self-Corrector, ReVISE, CoCoS: MBPP over 5 turns
    # the trained baselines at a CPU size: their --set values resolve to valid configs
    from cocos.baselines.revise.train import load_revise_config
    from cocos.baselines.self_corrector.train import load_self_corrector_config

    for cmd, load in (("self-corrector", load_self_corrector_config), ("revise", load_revise_config)):
        line = next(ln for ln in plan.splitlines() if ln.startswith(f"+ cocos {cmd} "))
        cfg = load(ROOT / re.search(r"--config (\S+)", line).group(1), re.findall(r"--set (\S+)", line))
        assert cfg.limit == 4 and cfg.samples == 2 and cfg.max_steps == 1 and cfg.model.endswith("/boost_model")
    small = dry_run("small", tmp_path)
    for cmd, limit, samples in (("self-corrector", 32, 4), ("revise", 16, 2)):
        assert re.search(rf"^\+ cocos {cmd} .*--set limit={limit} --set samples={samples} ", small, re.M), cmd
    assert "--budget 'small: first 30 problems of each test split" in small
