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
    p = sub.add_parser("eval", help="multi-turn self-correction evaluation")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    raise UserError("cocos eval is not built yet")


# ---- train --------------------------------------------------------------------------------------
def add_train_parser(sub):
    p = sub.add_parser("train", help="online multi-turn RL (CoCoS, SCoRe, ablations)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    raise UserError("cocos train is not built yet")


# ---- demo ---------------------------------------------------------------------------------------
def add_demo_parser(sub):
    p = sub.add_parser("demo", help="evaluate, train a few CoCoS steps, evaluate again (default model)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    raise UserError("cocos demo is not built yet")


# ---- sft ----------------------------------------------------------------------------------------
def add_sft_parser(sub):
    p = sub.add_parser("sft", help="supervised fine-tuning (boost model, Turn-SFT)")
    p.add_argument("--config", default=None, help="YAML of SFT settings (configs/boost_sft.yaml, configs/turn_sft.yaml)")
    p.add_argument("--out", required=True, help="folder for the fine-tuned HF checkpoint (loads with cocos eval --model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (repeatable)")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args) -> int:
    from cocos.train.sft import load_sft_config, run_sft

    cfg = load_sft_config(args.config, args.set)
    out = run_sft(cfg, args.out)
    print(f"saved the fine-tuned model to {out} (evaluate it with: cocos eval --model {out})")
    return 0


# ---- report -------------------------------------------------------------------------------------
def add_report_parser(sub):
    p = sub.add_parser("report", help="tables and plots from run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="eval and/or train run folders, any mix")
    p.add_argument("--out", required=True, help="folder for report.md and the PNG plots")
    p.add_argument("--label", action="append", default=None, help="method name per run folder, in order (default: folder name)")
    p.add_argument("--title", default="CoCoS comparison")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from cocos.report import build_report

    path = build_report(args.runs, args.out, labels=args.label, title=args.title)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_eval_parser, add_train_parser, add_demo_parser, add_sft_parser, add_report_parser):
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
