"""Did turn 1 learn to answer wrong on purpose? At gamma < 1 the accumulated reward pays a wrong turn 1 that turn 2
fixes (1) more than a right turn 1 kept (gamma), and per_turn_binary's turn 1 took it after ~200 steps.

For each trajectory-mode arm: its training batches in 10-step windows from log.jsonl (acc@1, acc@2, Δi→c, Δc→i),
then each held-out evaluation of it (the in-run checks on MBPP validation, eval/step_N, and the evaluations under
eval/ARM*/): acc@1, acc@2, Δi→c, Δc→i, and the share of turn-1 and turn-2 answers that are not Python at all
(ast.parse fails: the code is parsed, never run) and of turn-1 answers whose def has no parameter list
(`def name:`, the form the collapse took). The accuracies are over the problems whose tests can run here
(metrics.json's n_problems); the two shares over every answered problem.

    python docs/results/self_correction/sandbag.py OUT ARM [ARM ...]   # OUT: the script's folder; ARM e.g. per_turn_binary_s0
"""

import json
import re
import sys
from pathlib import Path

from cocos.finetune.sft_data import parses
from cocos.rl.monitor import mean

NO_PARAMS = re.compile(r"^\s*def \w+\s*:", re.M)


def held_out(folder: Path) -> str:
    m = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    n = len(rows)
    bad1 = sum(not parses(r["turns"][0]["code"]) for r in rows)
    bad2 = sum(not parses(r["turns"][1]["code"]) for r in rows)
    bare = sum(bool(NO_PARAMS.search(r["turns"][0]["code"])) for r in rows)
    return (f"{m['n_problems']:4d} problems ({n} answered)  acc@1 {100 * m['acc@1']:5.1f}  acc@2 {100 * m['acc@2']:5.1f}  "
            f"Δi→c {100 * m['delta_i2c(1,2)']:4.1f}  Δc→i {100 * m['delta_c2i(1,2)']:4.1f}  "
            f"not Python: t1 {100 * bad1 / n:5.1f}% t2 {100 * bad2 / n:5.1f}%  t1 `def name:` {100 * bare / n:5.1f}%")


out = Path(sys.argv[1])
for arm in sys.argv[2:]:
    run = out / "train" / arm
    print(f"{arm}: training batches (temperature of the run), 10-step windows")
    log = [json.loads(line) for line in open(run / "log.jsonl")]
    for lo in range(1, log[-1]["step"] + 1, 10):
        w = [s for s in log if lo <= s["step"] < lo + 10]
        if lo < log[-1]["step"] - 80 or not w:  # the last 80 steps: where a collapse shows
            continue
        acc1, acc2, i2c, c2i = (mean(s[k] for s in w) for k in ("acc@1", "acc@2", "delta_i2c", "delta_c2i"))
        print(f"  steps {lo:3d}-{w[-1]['step']:3d}  acc@1 {acc1:.3f}  acc@2 {acc2:.3f}  Δi→c {i2c:.3f}  Δc→i {c2i:.3f}")
    print(f"{arm}: held out, greedy")
    checks = sorted((run / "eval").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for folder in checks:
        print(f"  MBPP validation, step {folder.name.split('_')[1]:>3}: {held_out(folder)}")
    for folder in sorted((out / "eval").glob(f"{arm}*/*")):
        if (folder / "samples.jsonl").exists():
            print(f"  {folder.parent.name} {folder.name}: {held_out(folder)}")
