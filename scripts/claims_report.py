#!/usr/bin/env python
"""The paper's four claims, checked on the run folders of scripts/claims.sh: OUT/claims.md + plots.

    python scripts/claims_report.py runs/claims_cpu --budget "cpu: 30 steps, 3 seeds" --seeds "0 1 2"

The command only: the page is cocos.eval.claims (reading the runs, the claims, the plots, the page) and its
statistics cocos.eval.claims_stats (mean ± standard error over seeds, the verdict rule).
"""

from __future__ import annotations

import argparse

from cocos.eval.claims import build


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the claims.sh output folder (holds train/ and eval/)")
    p.add_argument("--budget", default="", help="the budget, stated on the page")
    p.add_argument("--seeds", default=None, help="only these seeds (space or comma separated); default: all found")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="also copy the page and plots to DIR, and the numbers behind them to DIR/runs")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.replace(",", " ").split()] if args.seeds else None
    res = build(args.out, seeds, args.budget, publish=args.publish)
    for i, c in res["claims"].items():
        print(f"claim {i}: {c['verdict']}")
    print(f"page: {res['page']}" + (f" (published in {args.publish})" if args.publish else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
