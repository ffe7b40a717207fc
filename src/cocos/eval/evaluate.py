"""The evaluation job: multi-turn self-correction episodes (or saved answers) -> metrics, samples, table.

    run_eval(EvalConfig(out="runs/x", model="smollm2-135m", dataset="mbpp", limit=100, fewshot=True))
    run_eval(EvalConfig(out="runs/y", samples="answers.jsonl", dataset="humaneval"))
    evaluate_policy(actor_or_policy, problems, settings, out=folder)   # the loop itself; the trainer uses it too

Writes, in the run folder `out` (layout: cocos.eval.runs):
- config.json: the EvalConfig, where the data came from, the package version, start time;
- samples.jsonl: one line per trajectory, written as each batch of problems finishes (nothing is lost if
  the job stops);
- metrics.json: the flat metrics of `cocos.eval.metrics.compute_metrics`, plus "wall_time_s" and "extraction"
  (the rule for answers without [DONE], `cocos.data.prompts.extract_code`: "strict", the paper's, by default).
Then prints the metrics as a table.

Who writes each turn is `actor` (cocos.episodes.actors: "policy", the model itself, by default; "self-refine"; or a
module:factory path) with its options in `actor_args`.

A samples file (`samples=`) has one JSON object per line, {"task_id": <the dataset's own id>, "turns":
[raw text of turn 1, ...]}; a turn may also be an object with a "text" field, so this job's own
samples.jsonl can be scored again. Several lines of one task are several samples of it. With `limit`,
only the lines of the split's first `limit` problems are scored.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from cocos.data.problems import Problem, load_problems
from cocos.episodes.records import RolloutSettings, Trajectory
from cocos.episodes.rollout import run_episodes, score_responses
from cocos.errors import UserError
from cocos.eval import runs
from cocos.eval.metrics import compute_metrics, turn_pairs


@dataclass(kw_only=True)
class EvalConfig(RolloutSettings):
    out: str
    model: str = "smollm2-135m"
    dataset: str = "mbpp"
    split: str = "test"
    limit: int | None = None
    samples: str | None = None  # score this file of saved answers instead of generating
    samples_per_problem: int = 1
    actor: str = "policy"  # who writes each turn (cocos.episodes.actors): policy | self-refine | module:factory
    actor_args: dict = field(default_factory=dict)  # the actor's options, e.g. {feedback_tokens: 256}
    dtype: str = "auto"
    batch_size: int = 16  # problems per generate call
    backend: str = "auto"
    rollout_dtype: str = "model"  # engine dtype; "model" keeps greedy output equal to HF generate's
    seed: int | None = 0

    def __post_init__(self):
        self.check_rollout()
        if self.samples is None:
            if self.samples_per_problem > 1 and self.temperature <= 0:
                raise UserError("samples_per_problem: above 1 needs temperature above 0 (greedy samples are all the same)")
            for name in ("samples_per_problem", "batch_size"):
                if getattr(self, name) < 1:
                    raise UserError(f"{name}: must be at least 1 (got {getattr(self, name)})")


# ---- samples files ------------------------------------------------------------------------------
def read_samples(path: str | Path, problems: list[Problem], dataset: str, split: str) -> list[tuple[Problem, list[str]]]:
    """Lines of a samples file matched to their problems, in the file's order."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--samples {path}: no such file; give a JSONL file of {{\"task_id\": ..., \"turns\": [...]}} lines")
    by_id = {str(pr.task_id): pr for pr in problems}
    out = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"--samples {path} line {n} is not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "task_id" not in row or not isinstance(row.get("turns"), list) or not row["turns"]:
                raise UserError(f"--samples {path} line {n} needs \"task_id\" and a non-empty \"turns\" list")
            texts = []
            for turn in row["turns"]:
                text = turn.get("text") if isinstance(turn, dict) else turn
                if not isinstance(text, str):
                    raise UserError(f"--samples {path} line {n}: each turn must be a string (or an object with \"text\")")
                texts.append(text)
            key = str(row["task_id"])
            if key not in by_id:
                raise UserError(
                    f"--samples {path} line {n}: task_id {row['task_id']!r} is not in {dataset} (split {split}); "
                    "use the dataset's own ids (MBPP: 11, HumanEval: \"HumanEval/0\") and the matching --dataset/--split"
                )
            out.append((by_id[key], texts))
    if not out:
        raise UserError(f"--samples {path} holds no samples for {dataset} (split {split})")
    n_turns = {len(t) for _, t in out}
    if len(n_turns) > 1:
        raise UserError(f"--samples {path}: every line needs the same number of turns, found {sorted(n_turns)}")
    return out


# ---- the job ------------------------------------------------------------------------------------
def evaluate_policy(actor, problems: list[Problem], settings: RolloutSettings, *, out: str | Path,
                    samples_per_problem: int = 1, batch_size: int = 16, seed: int | None = 0, progress: bool = True,
                    extra: dict | None = None) -> tuple[dict, list[Trajectory]]:
    """Episodes over `problems`, `batch_size` problems at a time (seed + offset per batch: distinct draws), appended
    to out/samples.jsonl as each batch finishes; -> (metrics, written to out/metrics.json with `extra`, trajectories)."""
    start = time.time()
    samples_path = runs.start_samples(out)
    trajs = []
    bar = tqdm(total=len(problems), desc="eval", unit="problem", disable=not progress)
    for i in range(0, len(problems), batch_size):
        got = run_episodes(actor, problems[i : i + batch_size], settings, samples_per_problem=samples_per_problem,
                           seed=None if seed is None else seed + i,
                           progress=progress)  # a second bar: the phase (generating / running tests) of this batch
        runs.append_samples(samples_path, got)
        trajs += got
        bar.update(len(got) // samples_per_problem)
    bar.close()
    metrics = compute_metrics(trajs, problems) | (extra or {})
    metrics["wall_time_s"] = round(time.time() - start, 2)
    metrics["extraction"] = settings.extraction
    runs.write_metrics(out, metrics)
    return metrics, trajs


def preload_for(dataset: str) -> None:
    """ODEX programs import numpy and pandas: the sandbox workers import them once, not every program (a cold pandas
    import can take a good part of a test's 3 s on a busy machine: a wrong timeout). Set before the sandbox's first
    use; a COCOS_SANDBOX_PRELOAD of the user's own stands."""
    if dataset == "odex":
        found = [m for m in ("numpy", "pandas") if importlib.util.find_spec(m) is not None]
        if found:
            os.environ.setdefault("COCOS_SANDBOX_PRELOAD", ",".join(found))


def run_eval(cfg: EvalConfig, *, console=None, progress: bool = True) -> dict:
    out = Path(cfg.out)
    preload_for(cfg.dataset)
    settings = cfg.rollout_settings()
    if cfg.samples is not None:
        start = time.time()
        problems = load_problems(cfg.dataset, cfg.split)
        keep = problems[: cfg.limit] if cfg.limit else problems
        pairs = read_samples(cfg.samples, problems, cfg.dataset, cfg.split)
        if cfg.limit is not None:  # a task past the limit is skipped; one outside the split was refused above
            kept = {p.task_id for p in keep}
            pairs = [(p, t) for p, t in pairs if p.task_id in kept]
            if not pairs:
                raise UserError(f"--samples {cfg.samples} holds no samples for the first {cfg.limit} problems")
        _write_config(out, cfg, keep)
        trajs = score_responses(pairs, reward=cfg.reward, timeout=cfg.timeout, fewshot=cfg.fewshot,
                                extraction=cfg.extraction)
        runs.append_samples(runs.start_samples(out), trajs)
        metrics = compute_metrics(trajs, list({p.task_id: p for p, _ in pairs}.values()))
        metrics["wall_time_s"] = round(time.time() - start, 2)
        metrics["extraction"] = cfg.extraction
        runs.write_metrics(out, metrics)
    else:
        from cocos.episodes.actors import make_actor
        from cocos.generation.policy import load_policy

        problems = load_problems(cfg.dataset, cfg.split, cfg.limit)
        _write_config(out, cfg, problems)
        policy = load_policy(cfg.model, dtype=cfg.dtype, backend=cfg.backend, rollout_dtype=cfg.rollout_dtype)
        actor = make_actor(cfg.actor, policy, settings, cfg.actor_args)
        metrics, _ = evaluate_policy(actor, problems, settings, out=out, samples_per_problem=cfg.samples_per_problem,
                                     batch_size=cfg.batch_size, seed=cfg.seed, progress=progress)
    print_table(metrics, cfg, console=console)
    return metrics


def _write_config(out: Path, cfg: EvalConfig, problems: list[Problem]) -> None:
    from cocos import __version__

    record = asdict(cfg) | {
        "data_source": problems[0].meta.get("source", "") if problems else "",
        "n_problems": len(problems),
        "cocos_version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cfg.samples is not None:  # fields that only matter when generating
        for k in ("model", "samples_per_problem", "temperature", "top_p", "mode", "prompt_format", "actor",
                  "actor_args", "max_new_tokens", "dtype", "batch_size", "backend", "rollout_dtype", "seed"):
            record.pop(k)
    runs.write_json_config(out, record)


def print_table(metrics: dict, cfg: EvalConfig, *, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    T = max(int(k.split("@")[1]) for k in metrics if k.startswith("acc@") and "(" not in k)
    who = f"samples {cfg.samples}" if cfg.samples else f"{cfg.model}, {'few-shot' if cfg.fewshot else 'zero-shot'}"
    table = Table(title=f"{cfg.dataset} ({cfg.split}): {metrics['n_problems']} problems, {T} turns", caption=who,
                  min_width=56)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [f"acc@{t}" for t in range(1, T + 1)] + [f"tests_passed@{t}" for t in range(1, T + 1)]
    for a, b in turn_pairs(T):
        rows += [f"{name}({a},{b})" for name in ("delta", "delta_i2c", "delta_c2i", "delta_i2c_hardcoded", "unit_improve",
                                                 "unit_worsen", "unit_preserve", "edit_sim", "edit_sim_if_wrong",
                                                 "edit_sim_if_right", "copy_if_wrong")]
    rows += sorted(k for k in metrics if k.startswith("pass@"))
    for k in rows:
        if k not in metrics:  # saved metrics from before a key existed
            continue
        se = metrics.get(f"se:{k}")
        value = "n/a" if metrics[k] is None else f"{100 * metrics[k]:.1f}%" + (f" ± {100 * se:.1f}" if se else "")
        table.add_row(k, value)
    table.add_row("n_problems", str(metrics["n_problems"]))
    if metrics["n_samples"] != metrics["n_problems"]:
        table.add_row("n_samples", str(metrics["n_samples"]))
    if metrics["env_errors"]:
        table.add_row("env_errors", str(metrics["env_errors"]))
        for t in range(1, T + 1):
            table.add_row(f"acc@{t}(all)", f"{100 * metrics[f'acc@{t}(all)']:.1f}%")
    table.add_row("extraction", metrics["extraction"])
    table.add_row("wall time", f"{metrics['wall_time_s']:.1f} s")
    console.print(table)
    if metrics["env_errors"]:
        console.print(
            f"[yellow]{metrics['env_errors']} of {metrics['n_problems_total']} problems need libraries missing here "
            f"({', '.join(metrics['env_missing_modules'])}): environment problems, left out of the metrics above; "
            "acc@t(all) counts them as not correct.[/yellow]"
        )
