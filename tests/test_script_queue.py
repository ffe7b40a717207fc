"""The shared step queue of scripts/claims.sh, scripts/paper_comparison.sh and scripts/self_correction.sh (scripts/_lib.sh): two invocations of
one command, side by side, run every step exactly once between them, and each waits for the inputs the other makes.

A stand-in `cocos` on PATH makes each step's output folder (what the scripts test to call a step done) and records
which invocation ran it: the subject here is the bash queue, not the models (those have their own tests)."""

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_COCOS = r"""#!/usr/bin/env bash
out=""; steps=0; prev=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; case "$a" in max_steps=*) steps=${a#max_steps=};; esac; prev=$a; done
echo "$PPID $1 $out" >> "$CALLS"
[ -n "${ARGS:-}" ] && echo "$*" >> "$ARGS"
sleep 0.3
[ -n "${SLOW_AT:-}" ] && [[ "$out" == *$SLOW_AT ]] && sleep 4
[ -n "${CRASH_AT:-}" ] && [[ "$out" == *$CRASH_AT ]] && exit 3
case "$1" in
  sft|revise) mkdir -p "$out"; touch "$out/model.safetensors" ;;
  self-corrector) mkdir -p "$out/corrector"; touch "$out/corrector/model.safetensors" ;;
  train) if [ "$steps" = 0 ]; then mkdir -p "$out"; echo '{}' > "$out/curriculum.json";
         else mkdir -p "$out/checkpoints/step_$steps"; touch "$out/checkpoints/step_$steps/trainer_state.pt"; fi ;;
  eval) mkdir -p "$out"; echo '{}' > "$out/metrics.json"; : > "$out/samples.jsonl" ;;
  report) mkdir -p "$out" ;;
esac
"""


def _env(tmp_path: Path, **extra) -> dict:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "cocos").write_text(FAKE_COCOS)
    (fake / "cocos").chmod(0o755)
    # the real python (claims.sh writes its page with scripts/claims_report.py) after the stand-in cocos
    path = os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, "CALLS": str(tmp_path / "calls.txt"), "NICE": "", "QUEUE_POLL": "1",
            "BUDGET": "tiny", "OUT": str(tmp_path / "out"), **extra}


def _two_invocations(script: str, env: dict) -> list[subprocess.CompletedProcess]:
    cmd = ["bash", str(ROOT / "scripts" / script)]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)  # the first takes the first step
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out, _ = first.communicate(timeout=300)
    return [subprocess.CompletedProcess(cmd, first.returncode, out, ""), second]


def _calls(tmp_path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split(" ", 2)) for line in (tmp_path / "calls.txt").read_text().splitlines()]


def test_claims_queue_runs_each_job_once_across_two_invocations(tmp_path):
    boost = tmp_path / "boost"
    boost.mkdir()
    (boost / "model.safetensors").touch()
    env = _env(tmp_path, BOOST=str(boost))
    plan = lambda: subprocess.run(["bash", str(ROOT / "scripts" / "claims.sh")], cwd=ROOT, env={**env, "DRY_RUN": "1"},
                                  capture_output=True, text=True, check=True).stdout
    assert "~0 h 16 min in all; ~0 h 16 min left" in plan()
    for res in _two_invocations("claims.sh", env):
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "~0 h 16 min in all; ~0 h 0 min left" in plan()  # the estimate counts what is not done yet
    calls = _calls(tmp_path)
    outs = Counter(out for _, _, out in calls)
    # curriculum + 6 runs x 2 seeds + 3 evaluated runs x 2 seeds x 2 datasets
    assert len(outs) == 1 + 12 + 12 and set(outs.values()) == {1}, outs
    assert len({pid for pid, _, _ in calls}) == 2  # both invocations took steps
    order = [out for _, _, out in calls]
    for run in ("g0.5_s0", "binary_s1", "score_s0"):  # an evaluation starts after its training run
        assert order.index(str(tmp_path / "out" / "train" / run)) < order.index(str(tmp_path / "out" / "eval" / run / "mbpp"))
    assert (tmp_path / "out" / "claims.md").exists()


def test_paper_comparison_queue_shares_steps_and_waits_for_inputs(tmp_path):
    env = _env(tmp_path, SLOW_AT="boost_model")  # the boost SFT lasts while the second invocation starts
    for res in _two_invocations("paper_comparison.sh", env):
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    calls = _calls(tmp_path)
    outs = Counter(out for _, kind, out in calls if kind != "report")
    assert outs and set(outs.values()) == {1}, outs
    by_pid = Counter(pid for pid, _, _ in calls)
    assert len(by_pid) == 2
    order = [out for _, _, out in calls]
    out = tmp_path / "out"
    # the second invocation evaluates the base model while the first trains the boost model ...
    assert order.index(str(out / "eval" / "base" / "mbpp")) < order.index(str(out / "turn_sft_model"))
    # ... and nothing that starts from the boost model runs before it exists
    for step in ("turn_sft_model", "self_corrector", "revise_model", "train/score", "eval/boost/mbpp"):
        assert order.index(str(out / "boost_model")) < order.index(str(out / step))


def test_a_crashed_step_stops_its_invocation_with_its_status(tmp_path):
    boost = tmp_path / "boost"
    boost.mkdir()
    (boost / "model.safetensors").touch()
    env = _env(tmp_path, BOOST=str(boost), CRASH_AT="train/binary_s0")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "claims.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 3
    assert not (tmp_path / "out" / "claims.md").exists()


def test_self_correction_queue_runs_each_job_once_in_order(tmp_path):
    env = _env(tmp_path, SLOW_AT="boost_new")  # the second invocation starts while the new boost trains
    for res in _two_invocations("self_correction.sh", env):
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    calls = _calls(tmp_path)
    outs = Counter(out for _, _, out in calls)
    # 2 boosts, the curriculum's samples, pass@k at 3 temperatures, the new boost's validation check, 2 arms,
    # Self-Corrector, 3 datasets x (2 boosts + 2 arms + Self-Corrector), sampled MBPP evaluations of the new boost
    # and the 2 arms
    assert len(outs) == 2 + 1 + 3 + 1 + 2 + 1 + 15 + 3 and set(outs.values()) == {1}, outs
    assert len({pid for pid, _, _ in calls}) == 2
    out, order = tmp_path / "out", [o for _, _, o in calls]
    assert order.index(str(out / "boost_old")) < order.index(str(out / "eval" / "boost_old" / "mbpp"))
    assert order.index(str(out / "boost_new")) < order.index(str(out / "curriculum" / "samples"))
    for arm in ("last_turn_s0", "traj_g0.5_s0"):
        assert order.index(str(out / "curriculum" / "samples")) < order.index(str(out / "train" / arm))
        assert order.index(str(out / "train" / arm)) < order.index(str(out / "eval" / arm / "mbpp"))
        # an arm's MBPP number (the goal's) comes before its other datasets
        assert order.index(str(out / "eval" / arm / "mbpp")) < order.index(str(out / "eval" / arm / "humaneval"))
        assert order.index(str(out / "train" / arm)) < order.index(str(out / "sampled" / arm / "mbpp"))
    assert order.index(str(out / "boost_new")) < order.index(str(out / "reachable" / "boost_new_mbpp"))
    assert order.index(str(out / "boost_new")) < order.index(str(out / "eval_validation" / "boost_new"))
    assert (out / "curriculum" / "curriculum.json").exists() and (out / "page" / "self_correction.md").exists()


def test_self_correction_per_turn_variants_carry_the_arm_settings_and_their_change(tmp_path):
    env = _env(tmp_path, ARMS="per_turn_binary per_turn_binary_t0.5 per_turn_binary_g2", ARGS=str(tmp_path / "args.txt"))
    res = subprocess.run(["bash", str(ROOT / "scripts" / "self_correction.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    train = {line.split("--out ")[1].split()[0].rsplit("/", 1)[1]: line
             for line in (tmp_path / "args.txt").read_text().splitlines() if line.startswith("train ") and "/train/" in line}
    low, g2, base = train["per_turn_binary_t0.5_s0"], train["per_turn_binary_g2_s0"], train["per_turn_binary_s0"]
    for s in ("mode=trajectory", "advantage=per-turn", "reward=binary", "eval_every=50"):
        assert s in low and s in base and s in g2
    assert "temperature=0.5" in low and "temperature=0.5" not in base + g2
    # the arm's gamma after per_turn_binary's: the last --set wins
    assert g2.split("gamma=")[-1].split()[0] == "2" and base.split("gamma=")[-1].split()[0] == "0.5"


def test_credit_queue_runs_each_job_once_and_evaluates_trained_models(tmp_path):
    boost = tmp_path / "boost"
    boost.mkdir()
    (boost / "model.safetensors").touch()
    (tmp_path / "curriculum.json").write_text("{}")
    env = _env(tmp_path, MODEL=str(boost), CURRICULUM=str(tmp_path / "curriculum.json"), SLOW_AT="t3_rloo_s0")
    for res in _two_invocations("credit.sh", env):
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    calls = _calls(tmp_path)
    outs = Counter(out for _, _, out in calls)
    # gamma 2: 2 estimators x 2 seeds (tiny); 3 turns: 2 estimators; held-out: the start and the two 3-turn models
    assert len(outs) == 4 + 2 + 3 and set(outs.values()) == {1}, outs
    assert len({pid for pid, _, _ in calls}) == 2
    out, order = tmp_path / "out", [o for _, _, o in calls]
    for est in ("rloo", "per_turn"):
        assert order.index(str(out / "train" / f"t3_{est}_s0")) < order.index(str(out / "eval" / f"t3_{est}_s0"))
    assert (out / "page" / "credit_training.md").exists()


def test_credit_refuses_a_missing_model(tmp_path):
    env = _env(tmp_path, MODEL=str(tmp_path / "nowhere"))
    res = subprocess.run(["bash", str(ROOT / "scripts" / "credit.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "MODEL=" in res.stderr and "holds no model" in res.stderr
