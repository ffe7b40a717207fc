"""Self-correction metrics (DESIGN.md, "Metrics") from trajectories.

    compute_metrics(trajectories, problems) -> dict of flat keys
    python -m cocos.eval.metrics EVAL_FOLDER [...]   # add to metrics.json the keys its samples.jsonl gives and it
                                                     # lacks (a metric added after the run), running no code

A problem is correct at turn t when all its tests pass. Keys (all shares in [0, 1]):
- "acc@t" for every turn t; "tests_passed@t": mean share of tests passed (the progressive reward);
  "hardcoded@t": share of answers that return, as a literal, a value a test shown in the prompt expects (the
  prompt holds the tests, so a model can earn partial reward by echoing one: a reward hack to watch).
- for every consecutive pair (t, t+1) and for (1, T): "delta(t1,t2)" = acc@t2 - acc@t1,
  "delta_i2c(t1,t2)" (incorrect at t1, correct at t2), "delta_c2i(t1,t2)", "unit_improve(t1,t2)" (share
  of problems whose passed-test count rose from t1 to t2), "unit_worsen(t1,t2)" (share whose count fell;
  the authors' `better_at_t` / `worsen_at_t`), "unit_preserve(t1,t2)" (test cases passed at t1 and at t2
  / test cases passed at t1, pooled over every problem and sample, not a per-problem mean; 1.0 when no
  test passed at t1), "unit_preserve_base(t1,t2)" (its denominator: the test cases passed at t1, a count;
  0 says unit_preserve measured nothing), "edit_sim(t1,t2)" (mean difflib.SequenceMatcher ratio of the two extracted codes;
  1.0 for identical codes), "edit_sim_if_wrong(t1,t2)" / "edit_sim_if_right(t1,t2)" (the same over the samples
  wrong / right at t1; null when there are none), "copy_if_wrong(t1,t2)" (share of the samples wrong at t1 whose
  t2 code is at least COPY_SIMILARITY similar: no attempt to correct), "keep_selectivity(t1,t2)" (AUROC: the chance
  that a sample right at t1 keeps more of its code at t2 than one wrong at t1, ties half; 0.5 = turn 2 rewrites right
  and wrong answers alike, 1 = it keeps every right one more than any wrong one: correction aimed at the wrong
  answers; with "se:" its Hanley-McNeil standard error; null when either is missing), "delta_i2c_hardcoded(t1,t2)" (share of all
  problems whose i->c fix returns a literal that a test shown in the prompt expects: the prompt holds the tests, so
  such a "fix" may only echo an answer; counted within delta_i2c, not removed from it).
- "confidence_auroc@t", when the answers carry the sampler's log-probs (every evaluation run since it was added;
  not scores of saved answers): AUROC of an answer's mean token log-prob (its confidence, softmax(logits) when
  greedy) for "right at t" against "wrong at t", pooled over samples, with "se:" its Hanley-McNeil standard error:
  whether the model could tell its right answers from its wrong ones (0.5: not at all), the information a
  selective turn 2 needs; null when every answer is right or every one wrong.
- "se:<key>" for acc@t, hardcoded@t, tests_passed@t, delta, delta_i2c, delta_c2i, unit_improve and unit_worsen: the standard
  error of the mean over problems (sample standard deviation / sqrt(n)); for delta, of the per-problem change.
- "n_problems" (problems the metrics average over), "n_samples" (trajectories in them).
- with several samples per problem: "pass@k@turnt" (the unbiased estimator of Chen et al. 2021,
  1 - C(n-c, k) / C(n, k), averaged over problems) for k in 1, 2, 5, 10, 20, 50, 100 and n, up to the
  smallest n of any problem. Every other metric except unit_preserve is computed per sample, averaged over
  the samples of a problem, then over problems (so acc@t equals pass@1@turnt).

Missing libraries (ODEX): a test that fails with ModuleNotFoundError / ImportError naming a module the
problem itself needs (its `meta["library"]`, or a module its setup or tests import) is an environment
problem, not wrong code. Such problems are left out of every metric above, and reported as
"env_errors" (how many were left out), "n_problems_total" (with them), "acc@t(all)" (share of all
problems correct, over every problem; a turn that hit a missing library is not correct; only when
env_errors > 0) and
"env_missing_modules" (the sorted list of missing modules). A module the answer imports on its own
(not needed by the problem) that is missing counts as wrong code.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections import OrderedDict
from math import comb
from typing import Iterable, Sequence

ENV_ERROR_TYPES = ("ModuleNotFoundError", "ImportError")
COPY_SIMILARITY = 0.95  # a later turn at least this similar to the earlier one copies it
PASS_AT_KS = (1, 2, 5, 10, 20, 50, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def edit_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def turn_pairs(T: int) -> list[tuple[int, int]]:
    """Consecutive pairs of turns, then (1, T) when it is not one of them."""
    pairs = [(t, t + 1) for t in range(1, T)]
    if T > 2:
        pairs.append((1, T))
    return pairs


# ---- environment problems -----------------------------------------------------------------------
def _imported_modules(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def needed_modules(problem) -> set[str]:
    """Modules a problem needs by itself: its declared libraries and what its setup and tests import."""
    names = {str(lib).split(".")[0] for lib in (problem.meta or {}).get("library", [])}
    for code in [problem.setup, *problem.tests]:
        names |= _imported_modules(code)
    return names


_MISSING = (re.compile(r"No module named '([^']+)'"), re.compile(r"cannot import name .* from '([^']+)'"))


def missing_module(outcome) -> str | None:
    """The top-level module a failed test could not import, if that is why it failed."""
    if getattr(outcome, "error_type", None) not in ENV_ERROR_TYPES:
        return None
    message = getattr(outcome, "message", "") or ""
    for pattern in _MISSING:
        m = pattern.search(message)
        if m:
            return m.group(1).split(".")[0]
    return None


def env_missing(trajectories: Iterable, problem) -> set[str]:
    """Modules the problem needs that were missing in any turn of any of its trajectories."""
    needed = needed_modules(problem)
    found = set()
    for traj in trajectories:
        for turn in traj.turns:
            for o in turn.outcomes:
                mod = missing_module(o)
                if mod is not None and mod in needed:
                    found.add(mod)
    return found


# ---- the metrics --------------------------------------------------------------------------------
def _passed_set(turn) -> set[int]:
    return {i for i, o in enumerate(turn.outcomes) if o.status == "passed"}


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _se(xs: Sequence[float]) -> float:
    """Standard error of the mean of xs (0 for fewer than 2 values)."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (n - 1) / n) ** 0.5


def shown_expected_values(problem) -> list:
    """The literal right-hand sides of the prompt's `assert <call> == <literal>` tests (bools and None left out:
    `return True` is a real answer to many problems)."""
    values = []
    for test in problem.shown_tests:
        try:
            node = ast.parse(test.strip()).body[0]
        except (SyntaxError, IndexError, ValueError):
            continue
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
                and isinstance(node.test.ops[0], ast.Eq):
            try:
                value = ast.literal_eval(node.test.comparators[0])
            except (ValueError, SyntaxError, TypeError):
                continue
            if value is not None and not isinstance(value, bool):
                values.append(value)
    return values


def returns_shown_value(code: str, problem) -> bool:
    """Whether `code` returns, as a literal, a value that a test shown in the prompt expects (a hard-coded answer)."""
    expected = shown_expected_values(problem)
    if not expected:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                continue
            if any(type(value) is type(e) and value == e for e in expected):
                return True
    return False


def auroc(pos: Sequence[float], neg: Sequence[float]) -> tuple[float, float] | None:
    """P(a value from `pos` exceeds one from `neg`), ties counting half (Mann-Whitney U / (n1 n2), from ranks), and
    Hanley & McNeil's (1982) standard error; None when either side is empty."""
    n1, n2 = len(pos), len(neg)
    if not n1 or not n2:
        return None
    ranked = sorted([(x, 1) for x in pos] + [(x, 0) for x in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # tied values share their mean rank
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(is_pos for _, is_pos in ranked[i:j]) * (i + j + 1) / 2
        i = j
    a = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n2)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    return a, math.sqrt(max(var, 0.0))


def compute_metrics(trajectories: Sequence, problems: Sequence) -> dict:
    by_id = {p.task_id: p for p in problems}
    groups: "OrderedDict[object, list]" = OrderedDict()
    for traj in trajectories:
        if traj.task_id not in by_id:
            raise ValueError(f"trajectory for task {traj.task_id!r} has no problem")
        groups.setdefault(traj.task_id, []).append(traj)
    if not groups:
        raise ValueError("no trajectories to compute metrics from")
    T = len(next(iter(groups.values()))[0].turns)
    if any(len(tr.turns) != T for g in groups.values() for tr in g):
        raise ValueError("every trajectory needs the same number of turns")

    missing_by_task = {tid: env_missing(g, by_id[tid]) for tid, g in groups.items()}
    ok = [tid for tid in groups if not missing_by_task[tid]]
    m: dict = {}

    # per problem: each metric averaged over that problem's samples
    def per_problem(fn, se: str | None = None) -> float:
        values = [_mean([fn(tr) for tr in groups[tid]]) for tid in ok]
        if se:
            m[f"se:{se}"] = _se(values)
        return _mean(values)

    for t in range(1, T + 1):
        m[f"acc@{t}"] = per_problem(lambda tr: float(tr.turns[t - 1].all_passed), se=f"acc@{t}")
    for t in range(1, T + 1):  # answers that return what a shown test expects: the prompt holds the tests
        m[f"hardcoded@{t}"] = per_problem(lambda tr: float(returns_shown_value(tr.turns[t - 1].code, by_id[tr.task_id])),
                                          se=f"hardcoded@{t}")
    for t in range(1, T + 1):
        m[f"tests_passed@{t}"] = per_problem(
            lambda tr: tr.turns[t - 1].n_passed / len(tr.turns[t - 1].outcomes) if tr.turns[t - 1].outcomes else 0.0,
            se=f"tests_passed@{t}",
        )
    for t in range(1, T + 1):  # does the model's confidence separate its right answers from its wrong ones?
        conf = [(tr.turns[t - 1].mean_logprob, tr.turns[t - 1].all_passed) for tid in ok for tr in groups[tid]]
        if conf and all(c is not None for c, _ in conf):
            sep = auroc([c for c, right in conf if right], [c for c, right in conf if not right])
            m[f"confidence_auroc@{t}"] = sep[0] if sep else None
            if sep:
                m[f"se:confidence_auroc@{t}"] = sep[1]
    for a, b in turn_pairs(T):
        key = f"({a},{b})"

        def c(tr, t):
            return tr.turns[t - 1].all_passed

        m[f"delta{key}"] = m[f"acc@{b}"] - m[f"acc@{a}"]
        per_problem(lambda tr: float(c(tr, b)) - float(c(tr, a)), se=f"delta{key}")
        m[f"delta_i2c{key}"] = per_problem(lambda tr: float(not c(tr, a) and c(tr, b)), se=f"delta_i2c{key}")
        m[f"delta_c2i{key}"] = per_problem(lambda tr: float(c(tr, a) and not c(tr, b)), se=f"delta_c2i{key}")
        m[f"delta_i2c_hardcoded{key}"] = per_problem(lambda tr: float(
            not c(tr, a) and c(tr, b) and returns_shown_value(tr.turns[b - 1].code, by_id[tr.task_id])))
        m[f"unit_improve{key}"] = per_problem(lambda tr: float(tr.turns[b - 1].n_passed > tr.turns[a - 1].n_passed),
                                              se=f"unit_improve{key}")
        m[f"unit_worsen{key}"] = per_problem(lambda tr: float(tr.turns[b - 1].n_passed < tr.turns[a - 1].n_passed),
                                             se=f"unit_worsen{key}")
        # pooled over test cases: a problem that passed nothing at t1 has nothing to preserve and adds nothing
        kept = passed = 0
        for tid in ok:
            for tr in groups[tid]:
                before = _passed_set(tr.turns[a - 1])
                kept += len(before & _passed_set(tr.turns[b - 1]))
                passed += len(before)
        m[f"unit_preserve{key}"] = kept / passed if passed else 1.0
        m[f"unit_preserve_base{key}"] = passed
        sim = {id(tr): edit_similarity(tr.turns[a - 1].code, tr.turns[b - 1].code) for tid in ok for tr in groups[tid]}
        m[f"edit_sim{key}"] = per_problem(lambda tr: sim[id(tr)])
        # split by whether turn a was right: copying a right answer is fine, copying a wrong one corrects nothing
        sims = {True: [], False: []}
        for tid in ok:
            for tr in groups[tid]:
                sims[c(tr, a)].append(sim[id(tr)])
        m[f"edit_sim_if_right{key}"] = _mean(sims[True]) if sims[True] else None
        m[f"edit_sim_if_wrong{key}"] = _mean(sims[False]) if sims[False] else None
        m[f"copy_if_wrong{key}"] = _mean([float(x >= COPY_SIMILARITY) for x in sims[False]]) if sims[False] else None
        sel = auroc(sims[True], sims[False])  # pooled over samples, as the edit similarities above
        m[f"keep_selectivity{key}"] = sel[0] if sel else None
        if sel:
            m[f"se:keep_selectivity{key}"] = sel[1]

    n_min = min(len(groups[tid]) for tid in ok) if ok else 0
    if n_min > 1:
        ks = sorted({k for k in PASS_AT_KS if k <= n_min} | {n_min})
        for t in range(1, T + 1):
            for k in ks:
                m[f"pass@{k}@turn{t}"] = _mean(
                    [pass_at_k(len(groups[tid]), sum(tr.turns[t - 1].all_passed for tr in groups[tid]), k) for tid in ok]
                )

    m["n_problems"] = len(ok)
    m["n_samples"] = sum(len(groups[tid]) for tid in ok)
    m["n_problems_total"] = len(groups)
    m["env_errors"] = len(groups) - len(ok)
    if m["env_errors"]:
        for t in range(1, T + 1):
            m[f"acc@{t}(all)"] = _mean(
                [_mean([float(tr.turns[t - 1].all_passed) for tr in g]) for g in groups.values()]
            )
        m["env_missing_modules"] = sorted(set().union(*missing_by_task.values()))
    return m


def recompute(folder, dataset: str | None = None, split: str | None = None) -> list[str]:
    """Recompute an evaluation folder's metrics from its samples.jsonl (no code runs: the recorded test outcomes are
    scored again) and add the keys its metrics.json lacks. A key it has must come out the same, else UserError:
    the samples are not the ones the metrics came from. The problems' dataset and split come from config.json
    unless given. -> the keys added."""
    import json
    from pathlib import Path

    from cocos.data.problems import load_problems
    from cocos.errors import UserError
    from cocos.eval import runs

    folder = Path(folder)
    for name in (runs.METRICS, runs.SAMPLES):
        if not (folder / name).exists():
            raise UserError(f"{folder} has no {name}: not a finished evaluation folder (give folders that "
                            "`cocos eval` or a training run's eval/step_N wrote)")
    stored = json.loads((folder / runs.METRICS).read_text())
    if dataset is None or split is None:
        if not (folder / runs.CONFIG_JSON).exists():
            raise UserError(f"{folder} has no {runs.CONFIG_JSON} to name its problems: give --dataset and --split "
                            "(a training run's checks: its eval_dataset and eval_split, e.g. mbpp validation)")
        config = json.loads((folder / runs.CONFIG_JSON).read_text())
        dataset, split = dataset or config["dataset"], split or config["split"]
    trajs = runs.read_trajectories(folder / runs.SAMPLES)
    ids = {t.task_id for t in trajs}
    fresh = compute_metrics(trajs, [p for p in load_problems(dataset, split) if p.task_id in ids])
    for key in ("acc@1", "delta(1,2)", "edit_sim_if_wrong(1,2)", "copy_if_wrong(1,2)", "n_problems"):
        if key in stored and stored[key] is not None and abs(stored[key] - fresh[key]) > 1e-9:
            raise UserError(f"{folder}: {key} from samples.jsonl is {fresh[key]}, metrics.json says {stored[key]}: "
                            "the samples are not the ones these metrics came from; nothing written")
    added = [k for k in fresh if k not in stored]
    runs.write_metrics(folder, stored | {k: fresh[k] for k in added})
    return added


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m cocos.eval.metrics", description=recompute.__doc__)
    ap.add_argument("folders", nargs="+", help="evaluation folders (metrics.json + samples.jsonl)")
    ap.add_argument("--dataset", help="the problems' dataset (default: config.json's)")
    ap.add_argument("--split", help="the problems' split (default: config.json's)")
    args = ap.parse_args(argv)
    from cocos.errors import UserError

    failed = 0
    for folder in args.folders:  # one bad folder is named and skipped; the others are still done
        try:
            added = recompute(folder, args.dataset, args.split)
        except UserError as e:
            print(f"cocos.eval.metrics: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{folder}: added {', '.join(added) if added else 'nothing'}")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
