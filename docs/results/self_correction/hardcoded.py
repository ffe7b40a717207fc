"""How many answers only echo a test shown in the prompt? From each evaluation's samples.jsonl (no model needed).

Per model, dataset and turn: the share of answers that return, as a literal, a value that a shown test expects
(cocos.eval.metrics.returns_shown_value, the metric hardcoded@t of later evaluations), the share whose function is a
single `return <constant>` (literal-only), how many of the correct answers are literal-only, and how many of the
turn-2 reward gains (more tests passed than at turn 1) come from a literal-only turn 2.

    COCOS_DATA_DIR=../shared/data python docs/results/self_correction/hardcoded.py OUT   # scripts/self_correction.sh's OUT
"""

import ast
import json
import sys
from pathlib import Path

from cocos.data.problems import load_problems
from cocos.eval.metrics import returns_shown_value


def literal_only(code: str) -> bool:
    """The first function's body (docstring aside) is one `return <literal>`."""
    try:
        tree = ast.parse(code or "")
    except (SyntaxError, ValueError):
        return False
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    body = [s for s in funcs[0].body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))] \
        if funcs else []
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return False
    try:
        ast.literal_eval(body[0].value)
    except (ValueError, SyntaxError, TypeError):
        return False
    return True


out = Path(sys.argv[1])
split = {"mbpp": "test", "humaneval": "test", "odex": "test"}
problems = {ds: {p.task_id: p for p in load_problems(ds, sp)} for ds, sp in split.items()}
print("| model | dataset | n | echo a shown test t1 / t2 | literal-only t1 / t2 | correct t1 / t2 (literal-only) "
      "| turn-2 gains (literal-only) |")
print("|---|---|---:|---:|---:|---:|---:|")
for model in sorted(p.name for p in (out / "eval").iterdir() if p.is_dir()):
    for ds in split:
        path = out / "eval" / model / ds / "samples.jsonl"
        if not path.exists():
            continue
        recs = [json.loads(line) for line in path.open()]
        n = len(recs)
        echo = [sum(returns_shown_value(r["turns"][t]["code"] or "", problems[ds][r["task_id"]]) for r in recs)
                for t in (0, 1)]
        lit = [sum(literal_only(r["turns"][t]["code"]) for r in recs) for t in (0, 1)]
        right = [[r for r in recs if r["turns"][t]["passed"] == r["turns"][t]["total"] > 0] for t in (0, 1)]
        right_lit = [sum(literal_only(r["turns"][t]["code"]) for r in right[t]) for t in (0, 1)]
        gains = [r for r in recs if r["turns"][1]["passed"] > r["turns"][0]["passed"]]
        gains_lit = sum(literal_only(r["turns"][1]["code"]) for r in gains)
        pct = lambda x: f"{100 * x / n:.1f}%"  # noqa: E731
        print(f"| {model} | {ds} | {n} | {pct(echo[0])} / {pct(echo[1])} | {pct(lit[0])} / {pct(lit[1])} | "
              f"{len(right[0])} ({right_lit[0]}) / {len(right[1])} ({right_lit[1]}) | {len(gains)} ({gains_lit}) |")
