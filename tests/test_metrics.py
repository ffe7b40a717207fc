"""Metrics from hand-made trajectories, with every value computed by hand."""

from types import SimpleNamespace

import pytest

from cocos.data.problems import Problem
from cocos.episodes.records import Trajectory, Turn
from cocos.eval.metrics import compute_metrics, edit_similarity, pass_at_k, turn_pairs


def outcome(status, error_type=None, message=""):
    return SimpleNamespace(status=status, error_type=error_type, message=message, passed=status == "passed")


def turn(code, statuses):
    return Turn(prompt="", text=code, code=code, outcomes=[outcome(s) for s in statuses])


def prob(tid, k=3, **kw):
    return Problem(task_id=tid, text="t", tests=[f"assert {i}" for i in range(k)], **kw)


P, F = "passed", "failed"


def test_two_turn_metrics_by_hand():
    # codes chosen so that difflib's matches are a common prefix (+ one char): ratio = 2M / (len a + len b)
    f1, f2 = "def f(x):\n    return x+1", "def f(x):\n    return 2"
    g1, g2 = "def g(x):\n    return 2", "def g(x):\n    return x*2"
    h1, h2 = "def h(x):\n    return 1", "def h(x):\n    return 2"
    k = "def k(:\n    return 5"
    assert len("def f(x):\n    return ") == 21
    trajs = [
        Trajectory(1, [turn(f1, [P, P, P]), turn(f2, [P, F, F])]),  # correct -> incorrect
        Trajectory(2, [turn(g1, [P, F, F]), turn(g2, [P, P, P])]),  # incorrect -> correct
        Trajectory(3, [turn(h1, [P, F, F]), turn(h2, [F, P, F])]),  # same count, other test
        Trajectory(4, [turn(k, ["error"]), turn(k, ["error"])]),  # nothing passed, unchanged
    ]
    problems = [prob(1), prob(2), prob(3), prob(4, k=1)]
    m = compute_metrics(trajs, problems)
    assert m["acc@1"] == 0.25 and m["acc@2"] == 0.25 and m["delta(1,2)"] == 0.0
    assert m["delta_i2c(1,2)"] == 0.25 and m["delta_c2i(1,2)"] == 0.25
    assert m["unit_improve(1,2)"] == 0.25 and m["unit_worsen(1,2)"] == 0.25  # problem 2 rose, problem 1 fell
    # pooled: of the 3 + 1 + 1 tests passed at turn 1, 1 + 1 + 0 still pass (problem 4 passed none)
    assert m["unit_preserve(1,2)"] == pytest.approx(2 / 5)
    assert m["edit_sim(1,2)"] == pytest.approx((42 / 46 + 44 / 46 + 42 / 44 + 1) / 4)
    assert m["tests_passed@1"] == pytest.approx(5 / 12) and m["tests_passed@2"] == pytest.approx(5 / 12)
    assert m["n_problems"] == 4 and m["n_samples"] == 4 and m["env_errors"] == 0
    assert not any(key.startswith("pass@") for key in m)


def test_split_edit_similarity_copies_standard_errors_and_hardcoded_fixes():
    """Edit similarity split by turn-1 right / wrong, copies of wrong answers, standard errors over problems, and
    i->c fixes that return a value a shown test expects."""
    f1, f2 = "def f(x):\n    return x+1", "def f(x):\n    return 2"
    wrong = "def g(x):\n    return x"
    shown = ["assert g(3) == 9", "assert g(2) == True"]
    trajs = [
        Trajectory(1, [turn(f1, [P, P, P]), turn(f2, [P, F, F])]),  # right at 1: sim 42/46
        Trajectory(2, [turn(wrong, [F, F]), turn("def g(x):\n    if x == 3:\n        return 9\n    return 0", [P, P])]),
        Trajectory(3, [turn(wrong, [F, F]), turn(wrong, [F, F])]),  # wrong, copied
        Trajectory(4, [turn(wrong, [F, F]), turn("def g(x):\n    y = x * x\n    return y", [P, P])]),  # a real fix
    ]
    problems = [prob(1), prob(2, k=2, prompt_tests=shown), prob(3, k=2), prob(4, k=2, prompt_tests=shown)]
    m = compute_metrics(trajs, problems)
    wrong_sims = [edit_similarity(wrong, t.turns[1].code) for t in trajs[1:]]
    assert m["edit_sim_if_right(1,2)"] == pytest.approx(42 / 46)
    assert m["edit_sim_if_wrong(1,2)"] == pytest.approx(sum(wrong_sims) / 3)
    assert max(wrong_sims[0], wrong_sims[2]) < 0.95 and wrong_sims[1] == 1.0
    assert m["copy_if_wrong(1,2)"] == pytest.approx(1 / 3)  # only problem 3 copies
    assert m["delta_i2c(1,2)"] == 0.5 and m["delta_i2c_hardcoded(1,2)"] == 0.25  # `return 9`, not `return y`
    # answers that echo a shown expected value, per turn: only problem 2's turn 2 (`return 9`; True is left out)
    assert m["hardcoded@1"] == 0.0 and m["hardcoded@2"] == 0.25 and m["se:hardcoded@2"] == pytest.approx(0.25)
    # acc@1 per problem: 1, 0, 0, 0 -> mean 1/4, sample sd sqrt(1/4), se = sd / 2
    assert m["se:acc@1"] == pytest.approx(((0.75 ** 2 + 3 * 0.25 ** 2) / 3) ** 0.5 / 2)
    # delta per problem: -1, +1, 0, +1 -> mean 1/4
    assert m["delta(1,2)"] == 0.25
    assert m["se:delta(1,2)"] == pytest.approx(((1.25 ** 2 + 0.75 ** 2 + 0.25 ** 2 + 0.75 ** 2) / 3) ** 0.5 / 2)
    # the right answer keeps 42/46 of its code; of the wrong ones, two keep less (a win each), one keeps it all
    assert m["keep_selectivity(1,2)"] == pytest.approx(2 / 3) and m["se:keep_selectivity(1,2)"] > 0
    right_only = compute_metrics(trajs[:1], problems[:1])
    assert right_only["edit_sim_if_wrong(1,2)"] is None and right_only["copy_if_wrong(1,2)"] is None
    assert right_only["keep_selectivity(1,2)"] is None and "se:keep_selectivity(1,2)" not in right_only
    assert right_only["se:acc@1"] == 0.0  # one problem: no spread to measure


def test_unit_metrics_design_example():
    # DESIGN.md, Metrics: A passes 0/3 at t1 and t2; B passes tests {1,2} at t1 and {1} at t2
    trajs = [
        Trajectory("A", [turn("a", [F, F, F]), turn("a", [F, F, F])]),
        Trajectory("B", [turn("b", [F, P, P]), turn("b", [F, P, F])]),
    ]
    m = compute_metrics(trajs, [prob("A"), prob("B")])
    assert m["unit_improve(1,2)"] == 0.0
    assert m["unit_worsen(1,2)"] == 0.5
    assert m["unit_preserve(1,2)"] == 0.5  # not the 0.75 of a per-problem mean that counts A as preserved
    assert m["unit_preserve_base(1,2)"] == 2  # B's two passed tests; A passed none


def test_unit_metrics_pool_samples_and_count_swaps():
    # a: 2 samples; sample 0 swaps which test passes (same count: neither rose nor fell), sample 1 rises.
    # b: passes nothing at t1, 2 tests at t2. c: all 3 tests kept.
    trajs = [
        Trajectory("a", [turn("1", [P, F, F]), turn("2", [F, P, F])], sample_index=0),
        Trajectory("a", [turn("1", [P, F, F]), turn("3", [P, P, F])], sample_index=1),
        Trajectory("b", [turn("x", [F, F, F]), turn("y", [P, P, F])]),
        Trajectory("c", [turn("z", [P, P, P]), turn("z", [P, P, P])]),
    ]
    m = compute_metrics(trajs, [prob("a"), prob("b"), prob("c")])
    assert m["unit_improve(1,2)"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["unit_worsen(1,2)"] == 0.0
    assert m["unit_preserve(1,2)"] == pytest.approx((0 + 1 + 3) / (1 + 1 + 3))  # pooled over samples and problems
    # nothing passed at t1 anywhere: nothing lost, preserve is 1.0
    none = compute_metrics([Trajectory("b", [turn("x", [F, F, F]), turn("y", [P, F, F])])], [prob("b")])
    assert none["unit_preserve_base(1,2)"] == 0  # the 1.0 below is a convention, and this says so
    assert none["unit_preserve(1,2)"] == 1.0 and none["unit_improve(1,2)"] == 1.0 and none["unit_worsen(1,2)"] == 0.0


def test_three_turns_pairs_and_one_to_T():
    assert turn_pairs(1) == [] and turn_pairs(2) == [(1, 2)] and turn_pairs(3) == [(1, 2), (2, 3), (1, 3)]
    trajs = [Trajectory("a", [turn("x", [F]), turn("y", [F]), turn("y", [P])])]
    m = compute_metrics(trajs, [prob("a", k=1)])
    assert (m["acc@1"], m["acc@2"], m["acc@3"]) == (0.0, 0.0, 1.0)
    assert m["delta_i2c(2,3)"] == 1.0 and m["delta_i2c(1,3)"] == 1.0 and m["delta_i2c(1,2)"] == 0.0
    assert m["edit_sim(2,3)"] == 1.0 and m["edit_sim(1,2)"] == 0.0 and m["delta(1,3)"] == 1.0


def test_several_samples_average_and_pass_at_k():
    # problem a: 3 samples, 1 correct at turn 1, 2 at turn 2; problem b: 3 samples, none correct
    a = [
        Trajectory("a", [turn("1", [P]), turn("1", [P])], sample_index=0),
        Trajectory("a", [turn("2", [F]), turn("1", [P])], sample_index=1),
        Trajectory("a", [turn("3", [F]), turn("3", [F])], sample_index=2),
    ]
    b = [Trajectory("b", [turn("x", [F]), turn("x", [F])], sample_index=i) for i in range(3)]
    m = compute_metrics(a + b, [prob("a", k=1), prob("b", k=1)])
    assert m["acc@1"] == pytest.approx((1 / 3 + 0) / 2) and m["acc@2"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["delta_i2c(1,2)"] == pytest.approx((1 / 3) / 2)
    assert m["pass@1@turn1"] == pytest.approx(m["acc@1"])
    assert m["pass@2@turn1"] == pytest.approx((1 - 1 / 3 + 0) / 2)  # 1 - C(2,2)/C(3,2) for problem a
    assert m["pass@3@turn2"] == pytest.approx(0.5) and "pass@5@turn1" not in m
    assert m["n_problems"] == 2 and m["n_samples"] == 6


def test_pass_at_k_and_edit_similarity():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4) and pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert edit_similarity("", "") == 1.0 and edit_similarity("ab", "cd") == 0.0


def test_missing_library_is_an_environment_problem():
    no_pandas = outcome("error", "ModuleNotFoundError", "No module named 'pandas'")
    no_foo = outcome("error", "ModuleNotFoundError", "ModuleNotFoundError: No module named 'foo.bar'")
    problems = [
        prob("pd", k=1, setup="import pandas as pd\n", meta={"library": ["pandas"]}),
        prob("ok", k=1, meta={"library": []}),
        prob("foo", k=1, meta={"library": []}),  # the answer imported a module nobody asked for: wrong code
    ]
    trajs = [
        Trajectory("pd", [Turn("", "", "", [no_pandas])]),
        Trajectory("ok", [turn("", [P])]),
        Trajectory("foo", [Turn("", "", "import foo.bar", [no_foo])]),
    ]
    m = compute_metrics(trajs, problems)
    assert m["env_errors"] == 1 and m["env_missing_modules"] == ["pandas"]
    assert m["n_problems"] == 2 and m["n_problems_total"] == 3
    assert m["acc@1"] == 0.5 and m["acc@1(all)"] == pytest.approx(1 / 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no trajectories"):
        compute_metrics([], [])
    with pytest.raises(ValueError, match="same number of turns"):
        compute_metrics([Trajectory("a", [turn("", [P])]), Trajectory("b", [turn("", [P])] * 2)], [prob("a"), prob("b")])


def test_auroc_equals_counting_pairs_with_ties_half():
    import random

    from cocos.eval.metrics import auroc

    rng = random.Random(0)
    for _ in range(20):
        pos = [rng.choice([0.1, 0.5, 0.9, 1.0]) for _ in range(rng.randint(1, 12))]
        neg = [rng.choice([0.1, 0.5, 0.9, 1.0]) for _ in range(rng.randint(1, 12))]
        pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        assert auroc(pos, neg)[0] == pytest.approx(pairs)
    assert auroc([1.0, 0.9], [0.1, 0.2])[0] == 1.0 and auroc([0.1], [0.9])[0] == 0.0
    assert auroc([0.5] * 3, [0.5] * 4)[0] == 0.5  # all tied: no separation
    # Hanley-McNeil at A = 0.5, n1 = n2 = 10: sqrt((0.25 + 9 (1/3 - 1/4) * 2) / 100)
    a, se = auroc([1.0] * 5 + [0.0] * 5, [1.0] * 5 + [0.0] * 5)
    assert a == 0.5 and se == pytest.approx(((0.25 + 18 * (1 / 3 - 0.25)) / 100) ** 0.5)
    assert auroc([], [0.1]) is None and auroc([0.1], []) is None


def test_metrics_recomputed_from_saved_samples_add_only_missing_keys(tmp_path):
    """samples.jsonl read back gives the same metrics (no code runs); recompute adds a key metrics.json lacks and
    refuses samples that disagree with it."""
    import json

    from cocos.data.problems import load_problems
    from cocos.eval import runs
    from cocos.eval.metrics import recompute

    problems = load_problems("mbpp", "test", 3)
    passed = [0, 1, len(problems[2].tests)]  # turn 1: wrong, wrong, right
    trajs = [Trajectory(p.task_id, [turn(f"def f():\n    return {i}", [P] * n + [F] * (len(p.tests) - n)),
                                    turn(f"def f():\n    return {i} + 1", [P] * len(p.tests))])
             for i, (p, n) in enumerate(zip(problems, passed))]
    runs.append_samples(runs.start_samples(tmp_path), trajs)
    assert compute_metrics(runs.read_trajectories(tmp_path / "samples.jsonl"), problems) == compute_metrics(trajs, problems)
    full = compute_metrics(trajs, problems)
    runs.write_metrics(tmp_path, {k: v for k, v in full.items() if "keep_selectivity" not in k} | {"wall_time_s": 1.0})
    assert sorted(recompute(tmp_path, "mbpp", "test")) == ["keep_selectivity(1,2)", "se:keep_selectivity(1,2)"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == full | {"wall_time_s": 1.0}
    assert recompute(tmp_path, "mbpp", "test") == []  # nothing left to add
    runs.write_metrics(tmp_path, full | {"acc@1": 0.9})
    with pytest.raises(ValueError, match="acc@1"):
        recompute(tmp_path, "mbpp", "test")
    from cocos.eval.metrics import main

    (tmp_path / "cut").mkdir()  # a check cut off before its metrics: named and skipped, the exit status says so
    assert main([str(tmp_path / "cut")]) == 2
    with pytest.raises(ValueError, match="--dataset and --split"):
        recompute(tmp_path)  # no config.json to name the problems


def test_confidence_auroc_from_the_samplers_log_probs_and_back_from_samples(tmp_path):
    """confidence_auroc@t: the mean token log-prob of right answers against wrong ones; only when every answer
    carries log-probs; samples.jsonl keeps each turn's mean, enough to recompute it."""
    from cocos.eval import runs

    def answer(tid, right, logprobs):
        t1 = turn("def f():\n    return 1", [P, P] if right else [F, F])
        t1.logprobs = logprobs
        return Trajectory(tid, [t1, turn("def f():\n    return 1", [P, P] if right else [F, F])])

    problems = [prob(i, k=2) for i in range(4)]
    # right answers' confidences -0.1 and -0.5; wrong ones -0.3 and -0.9: 3 of the 4 pairs rank right above wrong
    trajs = [answer(0, True, [-0.1]), answer(1, True, [-0.4, -0.6]), answer(2, False, [-0.3]), answer(3, False, [-0.9])]
    m = compute_metrics(trajs, problems)
    assert m["confidence_auroc@1"] == pytest.approx(0.75) and m["se:confidence_auroc@1"] > 0
    assert "confidence_auroc@2" not in m  # turn 2 carries no log-probs here: not measured
    runs.append_samples(runs.start_samples(tmp_path), trajs)
    again = compute_metrics(runs.read_trajectories(tmp_path / "samples.jsonl"), problems)
    assert again["confidence_auroc@1"] == pytest.approx(0.75)
    trajs[0].turns[0].logprobs = None  # one answer without log-probs: no AUROC over the others only
    assert "confidence_auroc@1" not in compute_metrics(trajs, problems)
