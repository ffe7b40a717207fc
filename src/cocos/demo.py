"""`cocos demo`: the README's first command. On the default model: evaluate a small MBPP test slice
(2 turns, greedy), train CoCoS for a few steps on MBPP train, evaluate again, print before/after.

Everything lands in one run folder (the trainer's layout): eval/step_0 is "before", eval/step_N is
"after", plus log.jsonl, tensorboard/, checkpoints/step_N and demo_summary.json.

Sizes are chosen for a 2-core CPU and a 15-minute budget; every one is an option (`cocos demo --help`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

# Sized to finish well inside 15 minutes: measured 10.5 min on one core of this machine (5 steps, 3 of which
# had groups with reward signal to train on); 3-shot prompts (~700 tokens) dominate the training passes.
DEMO_DEFAULTS = dict(model="smollm2-135m", max_steps=5, problems_per_step=8, k=4, eval_limit=20, max_new_tokens=128)

# The demo's training settings on top of TrainConfig's defaults (the paper's objective; see configs/cocos_cpu.yaml).
DEMO_CONFIG = dict(
    method="cocos", reward="progressive", gamma=0.5, beta=0.01, turns=2, mode="trajectory", temperature=0.9,
    fewshot=True, lr=2e-5, schedule="constant", warmup_steps=1, grad_accum=1, micro_batch=4, skip_uniform_groups=True,
    eval_dataset="mbpp", eval_split="test", eval_at_start=True, eval_every=0, eval_max_new_tokens=128,
    save_every=0, save_total_limit=1,
)

# Rough CPU costs (this project's 2-core machine, default model), measured with the demo itself: seconds per
# generated token (bf16 rollout engine with its C++ kernel, ~280 tok/s on 2 cores; ~110 before the kernel) and
# per trained token (prompt + completion, reference + policy passes, backward, bf16 autocast), and the share of groups
# with any reward difference (the only ones trained with skip_uniform_groups: 0-0.375 per step, ~0.15 on average, here).
SEC_PER_GEN_TOKEN = 1 / 280
SEC_PER_TRAIN_TOKEN = 1 / 400
TRAINED_SHARE = 0.15
FEWSHOT_PROMPT_TOKENS = 700


def estimate_seconds(cfg) -> dict:
    """A coarse time plan (the demo prints it before starting)."""
    answer = 0.6 * cfg.max_new_tokens  # sampled answers stop at [DONE] before the budget, on average
    gen = cfg.problems_per_step * cfg.k * cfg.turns * answer * SEC_PER_GEN_TOKEN
    prompt = FEWSHOT_PROMPT_TOKENS if cfg.fewshot else 200
    train = cfg.problems_per_step * cfg.k * cfg.turns * (prompt + answer * 1.5) * SEC_PER_TRAIN_TOKEN
    if cfg.skip_uniform_groups:
        train *= TRAINED_SHARE
    # greedy evaluation answers of the base model run to the token budget
    ev = (cfg.eval_limit or 0) * cfg.turns * (cfg.eval_max_new_tokens or cfg.max_new_tokens) * SEC_PER_GEN_TOKEN
    step = gen + train + 3
    return {"step": step, "train": step * cfg.max_steps, "eval": ev, "total": step * cfg.max_steps + 2 * ev + 30}


ROWS = ["acc@1", "acc@2", "delta(1,2)", "delta_i2c(1,2)", "delta_c2i(1,2)", "tests_passed@1", "tests_passed@2",
        "unit_improve(1,2)", "unit_worsen(1,2)", "unit_preserve(1,2)", "edit_sim(1,2)"]


def print_before_after(before: dict, after: dict, n: int, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"MBPP test, first {n} problems, 2 turns, greedy: before vs after training")
    for col, just in (("metric", "left"), ("before", "right"), ("after", "right"), ("change", "right")):
        table.add_column(col, justify=just)
    for k in ROWS:
        if k in before and k in after:
            b, a = 100 * before[k], 100 * after[k]
            table.add_row(k, f"{b:.1f}%", f"{a:.1f}%", f"{a - b:+.1f}")
    console.print(table)


def run_demo(*, out: str = "runs/demo", model: str = DEMO_DEFAULTS["model"], max_steps: int = DEMO_DEFAULTS["max_steps"],
             problems_per_step: int = DEMO_DEFAULTS["problems_per_step"], k: int = DEMO_DEFAULTS["k"],
             eval_limit: int = DEMO_DEFAULTS["eval_limit"], max_new_tokens: int = DEMO_DEFAULTS["max_new_tokens"],
             overrides=(), resume: bool = False, progress: bool = True) -> dict:
    from cocos.errors import UserError
    from cocos.train.config import apply_overrides, build_config

    if eval_limit < 1:
        raise UserError("--eval-limit: the demo compares before and after; evaluate at least 1 problem")
    values = dict(DEMO_CONFIG, model=model, max_steps=max_steps, problems_per_step=problems_per_step, k=k,
                  eval_limit=eval_limit, max_new_tokens=max_new_tokens)
    cfg = build_config(apply_overrides(values, list(overrides)))
    est = estimate_seconds(cfg)
    print(
        f"cocos demo: (1) evaluate {cfg.model} on the first {cfg.eval_limit} MBPP test problems (2 turns, greedy, "
        f"{'3-shot' if cfg.fewshot else 'zero-shot'}); (2) train CoCoS for {cfg.max_steps} steps on MBPP train "
        f"({cfg.problems_per_step} problems x {cfg.k} samples x 2 turns per step, progressive reward, gamma {cfg.gamma}, "
        f"beta {cfg.beta}, lr {cfg.lr}); (3) evaluate again; (4) print the before/after table.\n"
        f"Expected time on a 2-core CPU: about {est['total'] / 60:.0f} min (evaluations ~{est['eval'] / 60:.1f} min each, "
        f"~{est['step']:.0f} s per training step). Run folder: {out}",
        flush=True,
    )
    from cocos.train.trainer import Trainer

    t0 = time.time()
    trainer = Trainer(cfg, out, resume=resume, progress=progress)
    result = trainer.train()
    out_dir = Path(out)
    before_path = out_dir / "eval" / "step_0" / "metrics.json"
    after_path = out_dir / "eval" / f"step_{trainer.step}" / "metrics.json"
    before = json.loads(before_path.read_text())
    after = json.loads(after_path.read_text())
    print_before_after(before, after, len(trainer.eval_problems))
    log = [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    curve = {f"reward@{t}": [round(s[f"reward@{t}"], 4) for s in log] for t in (1, 2)}
    wall = time.time() - t0
    summary = {"before": {k: before.get(k) for k in ROWS}, "after": {k: after.get(k) for k in ROWS},
               "n_eval_problems": len(trainer.eval_problems), "steps": trainer.step, "train_reward_curve": curve,
               "wall_time_s": round(wall, 1), "estimated_s": round(est["total"], 1), "config": cfg.to_dict(),
               "checkpoint": result.get("checkpoint")}
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    n = len(trainer.eval_problems)
    print(f"training reward per step, turn 1: {curve['reward@1']}\n"
          f"                         turn 2: {curve['reward@2']}\n"
          f"wall time {wall / 60:.1f} min. One problem is {100 / n:.1f} points of accuracy here: with {n} problems and "
          f"{trainer.step} steps, differences of one or two problems are within noise. Model: {result.get('checkpoint')} "
          f"(cocos eval --model that folder); longer run: cocos train --config configs/cocos_cpu.yaml --out runs/cocos_cpu",
          flush=True)
    return summary
