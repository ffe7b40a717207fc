"""Does the new boost model copy the code it is shown at turn 2, or answer the problem again?

For MBPP test problems where the old boost's turn-1 code is wrong and differs from the new boost's own turn-1 code
(edit similarity < 0.9), the new boost gets the old boost's code in its turn-2 prompt (greedy, 256 tokens). Its
turn-2 code is compared with the code shown (a copy) and with its own turn-1 code (answering again).

    python docs/results/self_correction/copy_or_reanswer.py OUT   # OUT: scripts/self_correction.sh's folder
"""

import json
import sys
from pathlib import Path

from cocos.data.problems import load_problems
from cocos.data.prompts import DONE, extract_code, paper_prompt
from cocos.eval.metrics import edit_similarity
from cocos.generation.policy import load_policy
from cocos.generation.sampling import Sampling

out = Path(sys.argv[1])
rows = {name: {r["task_id"]: r for r in map(json.loads, open(out / "eval" / name / "mbpp" / "samples.jsonl"))}
        for name in ("boost_old", "boost_new")}
problems = {p.task_id: p for p in load_problems("mbpp", "test")}
picked = []
for tid, old in rows["boost_old"].items():
    new = rows["boost_new"].get(tid)
    t1_old, t1_new = old["turns"][0], new["turns"][0] if new else None
    if new and t1_old["passed"] < t1_old["total"] and edit_similarity(t1_old["code"], t1_new["code"]) < 0.9:
        picked.append((problems[tid], t1_old["code"], t1_new["code"]))
policy = load_policy(str(out / "boost_new"), rollout_dtype="auto", verbose=False)
gens = policy.generate([paper_prompt(p, [shown]) for p, shown, _ in picked],
                       Sampling(max_new_tokens=256, temperature=0.0, stop=(DONE,)))
to_shown = [edit_similarity(extract_code(g.text, "strict"), shown) for g, (_, shown, _) in zip(gens, picked)]
to_own = [edit_similarity(extract_code(g.text, "strict"), own) for g, (_, _, own) in zip(gens, picked)]
n = len(picked)
print(f"{n} problems; turn 2 vs the code shown: mean similarity {sum(to_shown) / n:.3f}, copies (>= 0.95) "
      f"{sum(s >= 0.95 for s in to_shown)}; vs its own turn 1: mean {sum(to_own) / n:.3f}, "
      f"the same answer (>= 0.95) {sum(s >= 0.95 for s in to_own)}")
