"""Did training make turn 2 selective on the training problems themselves? From each arm's rollouts.jsonl (every
trajectory of every step, temperature 0.9): per 50-step window, keep_selectivity (AUROC: an answer right at turn 1
keeps more of its code at turn 2 than a wrong one; 0.5 = rewrites alike, Hanley-McNeil SE) pooled over the window's
trajectories, with how many were right at turn 1 and the window's Δi→c − Δc→i in points. In last-turn mode the k=4
samples of a problem share one turn 1, so the trajectories are not independent and the SE is too small. Held out
(MBPP test) the same AUROC is on the page.

    python docs/results/self_correction/training_selectivity.py OUT [ARM ...]   # OUT: scripts/self_correction.sh's folder
"""

import json
import sys
from pathlib import Path

from cocos.eval.metrics import auroc

out, width = Path(sys.argv[1]), 50
arms = sys.argv[2:] or sorted(p.name for p in (out / "train").iterdir() if (p / "rollouts.jsonl").exists())
for arm in arms:
    windows: dict = {}
    for line in open(out / "train" / arm / "rollouts.jsonl"):
        r = json.loads(line)
        windows.setdefault((r["step"] - 1) // width, []).append(r)
    cells = []
    for w, rows in sorted(windows.items()):
        right = [r["edit_sim"] for r in rows if r["rewards"][0] == 1.0]
        wrong = [r["edit_sim"] for r in rows if r["rewards"][0] < 1.0]
        net = sum((r["rewards"][-1] == 1.0) - (r["rewards"][0] == 1.0) for r in rows) / len(rows)
        sel = auroc(right, wrong)
        cells.append(f"steps {w * width + 1}-{w * width + width}: " + (f"{sel[0]:.2f} ± {sel[1]:.2f}" if sel else "n/a")
                     + f" (right {len(right)}, net {100 * net:+.1f})")
    print(f"{arm}: " + "; ".join(cells))
