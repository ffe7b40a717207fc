"""Run folders: the one place that knows their layout, for the jobs that write them and the report that reads them.

An evaluation run (`cocos eval`):             A training run (`cocos train`, `cocos demo`):
  config.json    the EvalConfig + provenance     config.yaml            the resolved TrainConfig
  samples.jsonl  one trajectory per line         log.jsonl              one line of statistics per step
  metrics.json   flat metrics (cocos.eval.metrics)    eval/step_N/           samples.jsonl + metrics.json
                                                 checkpoints/step_N/    model, tokenizer, trainer_state.pt
                                                 rollouts.jsonl         one line per trajectory per step
                                                 curriculum.json, tensorboard/

A samples line: {"task_id", "sample_index", "shared_prefix_turns", "turns": [{"prompt", "text", "code", "reward",
"passed", "total", "mean_logprob", "outcomes": [{"status", "error_type", "message"}]}]}. A log line: "step", "reward@t", "acc@t",
"kl", "kl@t", "edit_sim(1,T)", timings, ... (cocos.rl.trainer). `read_run` reads either kind back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_JSON, CONFIG_YAML = "config.json", "config.yaml"
SAMPLES, METRICS, LOG = "samples.jsonl", "metrics.json", "log.jsonl"
ROLLOUTS = "rollouts.jsonl"  # a training run's trajectories, one line each per step (append_rollouts)
STATE_FILE = "trainer_state.pt"  # inside a checkpoint: optimizer, scheduler, step, data order
_STEP_DIR = re.compile(r"^step_(\d+)$")


# ---- paths --------------------------------------------------------------------------------------
def eval_dir(run: Path, step: int) -> Path:
    return Path(run) / "eval" / f"step_{step}"


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step_{step}"


def checkpoint_steps(run: Path) -> list[int]:
    """Steps with a complete checkpoint (a half-written one has no state file yet), ascending."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).exists())


def eval_steps(run: Path) -> list[int]:
    """Steps of a training run's evaluations (eval/step_N/ with metrics), ascending."""
    return _steps(Path(run) / "eval", METRICS)


def _steps(root: Path, required: str) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / required).exists())


# ---- writing ------------------------------------------------------------------------------------
def trajectory_record(traj) -> dict:
    """A `cocos.episodes.records.Trajectory` as one samples line (a turn's log-probs as their mean only)."""
    return {
        "task_id": traj.task_id,
        "sample_index": traj.sample_index,
        "shared_prefix_turns": traj.shared_prefix_turns,
        "turns": [
            {
                "prompt": t.prompt,
                "text": t.text,
                "code": t.code,
                "reward": t.reward,
                "passed": t.n_passed,
                "total": len(t.outcomes),
                "mean_logprob": t.mean_logprob,
                "outcomes": [
                    {"status": o.status, "error_type": getattr(o, "error_type", None),
                     "message": (getattr(o, "message", "") or "")[:500]}
                    for o in t.outcomes
                ],
            }
            for t in traj.turns
        ],
    }


def read_trajectories(path: Path) -> list:
    """samples.jsonl -> `Trajectory` records, the inverse of `trajectory_record` without token ids: enough to
    recompute metrics from saved samples without running any code (messages kept to their first 500 characters, a
    turn's log-probs as the one-element list of their mean, as written)."""
    from cocos.episodes.records import Trajectory, Turn
    from cocos.sandbox.batch import TestOutcome

    def logprobs(t):
        return None if t.get("mean_logprob") is None else [t["mean_logprob"]]

    return [Trajectory(r["task_id"], [Turn(prompt=t["prompt"], text=t["text"], code=t["code"], reward=t["reward"],
                                           logprobs=logprobs(t),
                                           outcomes=[TestOutcome(o["status"], o.get("error_type"), o.get("message") or "")
                                                     for o in t["outcomes"]])
                                      for t in r["turns"]],
                       sample_index=r.get("sample_index", 0), shared_prefix_turns=r.get("shared_prefix_turns", 0))
            for r in read_jsonl(path)]


def start_samples(folder: Path) -> Path:
    """An empty samples file in `folder` (created), to append to as batches finish."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SAMPLES
    path.write_text("")
    return path


def append_samples(path: Path, trajectories) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for traj in trajectories:
            f.write(json.dumps(trajectory_record(traj), ensure_ascii=False) + "\n")


def write_metrics(folder: Path, metrics: dict) -> None:
    (Path(folder) / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")


def write_json_config(folder: Path, record: dict) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / CONFIG_JSON).write_text(json.dumps(record, indent=2) + "\n")


def append_log(run: Path, stats: dict) -> None:
    with open(Path(run) / LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(stats) + "\n")


def append_rollouts(run: Path, step: int, trajectories: list[dict]) -> None:
    """One line per trajectory of the step (ROLLOUTS): its problem, sample, per-turn rewards, edit similarity of turn 1
    and turn T, advantage, and which turns echo a shown test's expected value: what the step's correction monitors were
    computed from."""
    keys = ("task_id", "sample", "rewards", "edit_sim", "advantage", "turn_advantages", "hardcoded")
    with open(Path(run) / ROLLOUTS, "a", encoding="utf-8") as f:
        for d in trajectories:
            f.write(json.dumps({"step": step, **{k: d[k] for k in keys if k in d}}) + "\n")


def trim_log(run: Path, last_step: int, name: str = LOG) -> None:
    """Drop lines of steps after `last_step` from log.jsonl (or `name`): a resumed run redoes them."""
    path = Path(run) / name
    if path.exists():
        keep = [r for r in read_jsonl(path) if r["step"] <= last_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


# ---- reading ------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
                    continue
    return rows


def read_log(path: Path) -> list[dict]:
    """A training log.jsonl. A step that trained no group (trained_frac 0) measured no KL: the trainer writes null
    there; logs written before it did have 0.0, read back as None too, so no KL curve dips to 0 at such steps."""
    log = read_jsonl(path)
    for rec in log:
        if rec.get("trained_frac") == 0:
            for key in [k for k in rec if k == "kl" or k.startswith("kl@")]:
                rec[key] = None
    return log


def read_config(run: Path) -> dict:
    run = Path(run)
    if (run / CONFIG_JSON).exists():
        return json.loads((run / CONFIG_JSON).read_text())
    if (run / CONFIG_YAML).exists():
        import yaml

        return yaml.safe_load((run / CONFIG_YAML).read_text()) or {}
    return {}


@dataclass
class Run:
    """A run folder read back. Its final metrics are an eval run's metrics.json, a training run's last evaluation."""
    label: str
    path: Path
    kind: str  # "eval" | "train"
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    metrics_source: str = ""  # file the final metrics came from, relative to the run folder
    evals: list[tuple[int, dict]] = field(default_factory=list)  # train: (step, metrics) in step order
    log: list[dict] = field(default_factory=list)  # train: log.jsonl records
    samples: list[dict] = field(default_factory=list)  # eval: samples.jsonl records
    notes: list[str] = field(default_factory=list)  # what is missing, one line each


def read_run(path: str | Path, label: str | None = None) -> Run:
    path = Path(path)
    if not path.is_dir():  # a run that never started: said in the report, not fatal
        return Run(label=label or path.name, path=path, kind="eval", notes=["folder does not exist (run not made)"])
    kind = "train" if (path / CONFIG_YAML).exists() or (path / LOG).exists() else "eval"
    run = Run(label=label or path.name, path=path, kind=kind, config=read_config(path))
    if not run.config:
        run.notes.append(f"no {CONFIG_JSON} / {CONFIG_YAML}")
    if kind == "train":
        run.log = read_log(path / LOG) if (path / LOG).exists() else []
        if not run.log:
            run.notes.append(f"no training log ({LOG} missing or empty): no learning curves")
        for step in eval_steps(path):
            run.evals.append((step, json.loads((eval_dir(path, step) / METRICS).read_text())))
        if run.evals:
            run.metrics = run.evals[-1][1]
            run.metrics_source = f"eval/step_{run.evals[-1][0]}/{METRICS}"
        else:
            run.notes.append(f"no evaluation (eval/step_N/{METRICS}): not in the accuracy tables")
        return run
    if (path / METRICS).exists():
        run.metrics = json.loads((path / METRICS).read_text())
        run.metrics_source = METRICS
    else:
        run.notes.append(f"no {METRICS}: not in the accuracy tables")
    if (path / SAMPLES).exists():
        run.samples = read_jsonl(path / SAMPLES)
    else:
        run.notes.append(f"no {SAMPLES}: no response lengths")
    return run
