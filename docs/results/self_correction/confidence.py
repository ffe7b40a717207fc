"""Can the model tell its right turn-1 answers from its wrong ones, and what would a turn 2 that re-answers only the
doubtful ones gain at this size? Selective correction needs the first (the prompt has no execution feedback); the
second bounds what "re-answer when unsure" can reach without learning to fix.

1. For each evaluated model, each problem's greedy turn-1 answer (eval/MODEL/mbpp/samples.jsonl: prompt and
   completion text) is scored by the same model: the mean log-probability of the completion's tokens (the text
   re-tokenized after the prompt's ids, as the sampler feeds them). Printed: the AUROC of that score for "turn 1
   right" (0.5: no separation) with Hanley-McNeil's standard error, the same for its least likely token's log-prob, and the AUROC of turn 2's edit similarity to
   turn 1 for "turn 1 right" (0.5: turn 2 rewrites right and wrong answers alike). Per-problem scores go to
   OUT/confidence/MODEL.jsonl.
2. For the new boost, with its turn-1 samples per problem (OUT/reachable/boost_new_mbpp*: 8 at temperature 0.9, 4 at
   0.5): a turn 2 that keeps its greedy answer or replaces it by one fresh sample gains p on a wrong answer and loses 1 - p on a
   right one (p: the problem's share of passing samples). Printed in points of the 500 problems: re-answer exactly
   the wrong ones (an oracle), every problem, the least confident share q (the best q, chosen on these same
   problems: optimistic) and cross-fitted (q chosen on odd task ids and used on even ones, and back: honest); then
   the fix and break rates of a fresh sample and the ROC point a gate would need for +2 points.
3. With --gate MODEL: MODEL's turn 2 (e.g. self_corrector, whose turn 1 is the new boost's greedy answer) used only
   on the problems where the new boost is least confident in its turn 1, the rest kept: the net Δi→c − Δc→i in
   points, chosen the same three ways, with the cross-fitted one's standard error over problems.

    python docs/results/self_correction/confidence.py OUT MODEL [MODEL ...] [--gate MODEL]   # OUT: the script's folder
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cocos.eval.claims_stats import mean_se
from cocos.eval.metrics import auroc, edit_similarity
from cocos.generation.sampling import encode_prompt


@torch.no_grad()
def logprobs(model, tok, prompt: str, text: str) -> list[float]:
    """The log-prob of each completion token after the prompt."""
    ids_p = encode_prompt(tok, prompt)
    ids_t = tok(text, add_special_tokens=False).input_ids
    ids = torch.tensor([ids_p + ids_t])
    logp = torch.log_softmax(model(ids).logits[0, len(ids_p) - 1:-1].float(), -1)
    return logp.gather(-1, torch.tensor(ids_t)[:, None])[:, 0].tolist()


def scores(out: Path, name: str) -> list[dict]:
    """Per problem: turn 1 right, its confidence, turn 2's similarity to it (cached in OUT/confidence/NAME.jsonl)."""
    cache = out / "confidence" / f"{name}.jsonl"
    if cache.exists():
        rows = [json.loads(line) for line in open(cache)]
        if all("min_logprob" in r for r in rows):
            return rows
    folder = out / name if (out / name / "config.json").exists() else out / "train" / name / "checkpoints" / "step_300"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = []
    for r in map(json.loads, open(out / "eval" / name / "mbpp" / "samples.jsonl")):
        t1, t2 = r["turns"][0], r["turns"][1]
        lp = logprobs(model, tok, t1["prompt"], t1["text"])
        rows.append({"task_id": r["task_id"], "right": t1["passed"] == t1["total"],
                     "confidence": sum(lp) / len(lp), "min_logprob": min(lp),
                     "edit_sim": edit_similarity(t1["code"], t2["code"])})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def gate_by_confidence(changes: list[tuple[float, int, float]]) -> str:
    """changes: (turn-1 confidence, task id, what taking the new answer changes in correctness) per problem. The new
    answer taken everywhere; on the least confident share q only, q the best on these problems (optimistic); and
    cross-fitted: q chosen on odd task ids and used on even ones, and back (honest), with its SE over problems."""
    changes = sorted(changes)
    n = len(changes)
    shares = [i / 100 for i in range(101)]

    def net(rows, share):  # take the new answer on the least confident `share` of rows, keep turn 1 elsewhere
        return [d if i < round(share * len(rows)) else 0.0 for i, (_, _, d) in enumerate(rows)]

    best = max(shares, key=lambda q: sum(net(changes, q)))
    fitted = []
    halves = [[c for c in changes if c[1] % 2 == parity] for parity in (0, 1)]
    for fit, use in ((halves[1], halves[0]), (halves[0], halves[1])):
        fitted += net(use, max(shares, key=lambda q: sum(net(fit, q))))
    cross = mean_se(fitted)
    return (f"everywhere {100 * sum(d for *_, d in changes) / n:+.2f} points; the least confident {100 * best:.0f}% "
            f"(chosen on these problems) {100 * sum(net(changes, best)) / n:+.2f}; cross-fitted {100 * cross.mean:+.2f} "
            f"(SE {100 * cross.se:.2f})")


def resample_ceiling(rows: list[dict], samples: Path) -> str:
    """Turn 2 = one fresh turn-1 sample: it gains p on a wrong answer and loses 1 - p on a right one."""
    passed: dict = {}
    for r in map(json.loads, open(samples)):
        t = r["turns"][0]
        passed.setdefault(r["task_id"], []).append(t["passed"] == t["total"])
    p = {tid: sum(v) / len(v) for tid, v in passed.items()}
    gain = {r["task_id"]: p[r["task_id"]] - r["right"] for r in rows}
    oracle = 100 * sum(gain[r["task_id"]] for r in rows if not r["right"]) / len(rows)
    return (f"re-answer by one fresh sample: exactly the wrong ones (oracle) {oracle:+.2f}; "
            + gate_by_confidence([(r["confidence"], r["task_id"], gain[r["task_id"]]) for r in rows])
            + "\n    " + gate_needed(rows, p))


def gate_needed(rows: list[dict], p: dict) -> str:
    """What a gate must do for re-answering to reach the goal (+2 points). A wrong answer re-answered gains f on
    average (its p), a right one loses b (its 1 - p); a gate that re-answers a share TPR of the wrong answers and FPR
    of the right ones, blind to p, nets (n_wrong TPR f - n_right FPR b) / n. Only wrong answers with p > 0 can gain:
    how well confidence tells those from right ones, and from the hopeless ones, is what a learned gate could use."""
    right = [r for r in rows if r["right"]]
    wrong = [r for r in rows if not r["right"]]
    fix = sum(p[r["task_id"]] for r in wrong) / len(wrong)
    brk = sum(1 - p[r["task_id"]] for r in right) / len(right)
    fixable = [r["confidence"] for r in wrong if p[r["task_id"]] > 0]
    hopeless = [r["confidence"] for r in wrong if p[r["task_id"]] == 0]
    a, se = auroc([r["confidence"] for r in right], fixable)
    b, se_b = auroc(fixable, hopeless)
    at_fpr0 = 0.02 * len(rows) / (len(wrong) * fix)
    slope = len(right) * brk / (len(wrong) * fix)
    return (f"fixes {100 * fix:.1f}% of wrong answers (on average; {len(fixable)} of {len(wrong)} fixable at all), "
            f"breaks {100 * brk:.1f}% of right ones; +2 points needs a gate with TPR >= {at_fpr0:.2f} + {slope:.2f} FPR"
            f"{' (beyond any gate)' if at_fpr0 > 1 else ''}; confidence tells right from fixable wrong at AUROC "
            f"{a:.3f} (SE {se:.3f}), fixable from hopeless wrong at {b:.3f} (SE {se_b:.3f})")


def gated(out: Path, name: str, by: list[dict]) -> str:
    """MODEL's turn 2 where `by` (the turn-1 model's scores) is least confident, its turn 1 elsewhere."""
    conf = {r["task_id"]: r["confidence"] for r in by}
    changes = []
    for r in map(json.loads, open(out / "eval" / name / "mbpp" / "samples.jsonl")):
        t1, t2 = r["turns"][0], r["turns"][1]
        changes.append((conf[r["task_id"]], r["task_id"],
                        float((t2["passed"] == t2["total"]) - (t1["passed"] == t1["total"]))))
    return f"{name}'s turn 2 gated by turn-1 confidence: " + gate_by_confidence(changes)


args = sys.argv[1:]
gate = args[args.index("--gate") + 1] if "--gate" in args else None
if gate:
    del args[args.index("--gate"):args.index("--gate") + 2]
out = Path(args[0])
torch.set_num_threads(1)
if gate:
    print(gated(out, gate, scores(out, "boost_new")))
for name in args[1:]:
    rows = scores(out, name)
    right = [r["confidence"] for r in rows if r["right"]]
    wrong = [r["confidence"] for r in rows if not r["right"]]
    a, se = auroc(right, wrong)
    b, se_b = auroc([r["edit_sim"] for r in rows if r["right"]], [r["edit_sim"] for r in rows if not r["right"]])
    c, se_c = auroc([r["min_logprob"] for r in rows if r["right"]], [r["min_logprob"] for r in rows if not r["right"]])
    print(f"{name}: {len(right)} right, {len(wrong)} wrong turn-1 answers; mean token log-prob {sum(right) / len(right):.3f}"
          f" (right) vs {sum(wrong) / len(wrong):.3f} (wrong); confidence AUROC {a:.3f} (SE {se:.3f}), by its least "
          f"likely token {c:.3f} (SE {se_c:.3f}); turn 2 keeps "
          f"right answers more than wrong ones: AUROC {b:.3f} (SE {se_b:.3f})")
    for folder in sorted((out / "reachable").glob(f"{name}_mbpp*")):  # one per sampling temperature
        if (folder / "metrics.json").exists():  # finished
            config = json.loads((folder / "config.json").read_text())
            print(f"{name}, {config['samples_per_problem']} samples at {config['temperature']}: "
                  f"{resample_ceiling(rows, folder / 'samples.jsonl')}")
