"""The self-correction page from a hand-made run folder: held-out rows with standard errors, the goal check, the
boost data, the curriculum rules and the arms' monitors."""

import json

from cocos.eval.report_correction import build


def metrics(acc1, acc2, i2c, c2i, se_delta):
    return {"acc@1": acc1, "acc@2": acc2, "delta(1,2)": acc2 - acc1, "delta_i2c(1,2)": i2c, "delta_c2i(1,2)": c2i,
            "se:acc@1": 0.01, "se:delta(1,2)": se_delta, "edit_sim_if_wrong(1,2)": 0.6, "copy_if_wrong(1,2)": None,
            "n_problems": 500}


def write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_page_from_a_run_folder(tmp_path):
    out = tmp_path / "out"
    write(out / "eval/boost_new/mbpp/metrics.json", metrics(0.10, 0.10, 0.01, 0.01, 0.004))
    write(out / "eval/boost_old/mbpp/metrics.json", metrics(0.09, 0.09, 0.0, 0.0, 0.0))
    write(out / "eval/traj_s0/mbpp/metrics.json", metrics(0.11, 0.14, 0.04, 0.01, 0.008))  # +3 points: met
    write(out / "eval/low_s0/mbpp/metrics.json", metrics(0.08, 0.11, 0.04, 0.01, 0.008))  # acc@1 below: not met
    write(out / "boost_new/sft_stats.json", {"examples": 10, "turn2_fix": 4, "turn2_keep": 1, "turn2_fix_own": 3,
                                             "turn2_fix_mutant": 1, "turn2_keep_own": 1, "fix_similarity_mean": 0.61})
    write(out / "curriculum/rule_signal.json", {"partial": {"kept": 7, "turn1_signal": 0.5, "turn2_signal": 0.75,
                                                            "turn2_improves": 0.1}})
    log = out / "train/traj_s0/log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"step": s, "reward@1": 0.1, "reward@2": 0.2, "copy_if_wrong": 1.0 - s / 10,
                                       "delta_i2c": 0.0, "delta_c2i": 0.0, "turn2_signal": 0.5}) + "\n" for s in range(1, 9)))
    assert "sampling temperature" not in build(out, tmp_path / "page", budget="tiny").read_text()
    write(out / "sampled/traj_s0/mbpp/metrics.json", metrics(0.05, 0.07, 0.04, 0.02, 0.01))
    page = build(out, tmp_path / "page", budget="tiny").read_text()
    assert "| traj_s0 | 500 | 11.0 ± 1.0 | 14.0 |" in page
    sampled = page.split("## Held out at the sampling temperature")[1].split("## Is correction")[0]
    assert "| traj_s0 | 500 | 5.0 ± 1.0 | 7.0 |" in sampled and "boost_new" not in sampled
    goal = {line.split(" | ")[0].strip("| "): line for line in page.splitlines() if line.startswith("| ") and "+" in line}
    assert goal["traj_s0"].endswith("| **yes** |") and "+3.0 | 0.8 | no |" in goal["traj_s0"]
    assert goal["low_s0"].endswith("| no |") and "| -2.0 |" in goal["low_s0"]
    assert "| boost_new | +0.0 | 0.4 | yes |" in page  # +0 within 2 SE of 0
    assert "fix_own 3, fix_mutant 1, keep_own 1" in page and "0.610" in page
    assert "| partial | progressive | 7 | 50.0 | 75.0 | 10.0 |" in page
    assert "| traj_s0 | 8 | 0.100 → 0.100 | 0.200 → 0.200 | 0.850 → 0.250 |" in page  # quarters: steps 1-2, 7-8
    assert (tmp_path / "page" / "monitors.png").exists()


def test_matched_windows_compare_arms_over_the_same_steps():
    from cocos.eval.report_correction import matched_windows

    long = [{"step": s, "copy_if_wrong": 0.2 if s <= 4 else 0.6} for s in range(1, 9)]
    short = [{"step": s, "copy_if_wrong": 0.1 * s} for s in range(1, 4)]
    md = "\n".join(matched_windows({"long": long, "short": short}, width=4, keys=("copy_if_wrong",)))
    assert "| arm | steps 1-4 | steps 5-8 |" in md
    assert "| long | 0.200 ± 0.000 | 0.600 ± 0.000 |" in md
    # the short arm's 3 steps: mean 0.2, SE sqrt(0.01 / 3); counted as fewer than the window; nothing after
    assert "| short | 0.200 ± 0.058 (3 steps) | - |" in md
    assert matched_windows({"only": long}) == []  # one arm: nothing to match


def test_reachable_counts_greedy_wrong_problems_that_a_sample_solves(tmp_path):
    from cocos.eval.report_correction import reachable

    out = tmp_path / "out"

    def samples(path, firsts):  # firsts: (task_id, passed) with 2 tests each
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"task_id": t, "turns": [{"passed": p, "total": 2}]}) + "\n"
                                for t, p in firsts))

    greedy, sampled = out / "eval/boost_new/mbpp", out / "reachable/boost_new_mbpp"
    write(greedy / "metrics.json", {"acc@1": 1 / 3, "se:acc@1": 0.27})
    samples(greedy / "samples.jsonl", [(1, 2), (2, 1), (3, 0)])  # greedy: 1 right, 2 and 3 wrong
    write(sampled / "metrics.json", {"pass@1@turn1": 0.25, "pass@2@turn1": 0.5, "n_samples": 6, "n_problems": 3})
    # task 2 solved by one of its two samples, task 3 by none; task 1's samples fail (greedy-right: not headroom)
    samples(sampled / "samples.jsonl", [(1, 0), (1, 1), (2, 0), (2, 2), (3, 1), (3, 0)])
    md = "\n".join(reachable(out))
    assert "| pass@1 | pass@2 |" in md and "| 25.0 | 50.0 |" in md and "acc@1 33.3 ± 27.0" in md
    assert "1 of the 2 problems that greedy turn 1 gets wrong are solved" in md and "(33.3% of all" in md
    # published without samples: the count comes from headroom.json
    (sampled / "samples.jsonl").unlink()
    assert "\n".join(reachable(out)) == md
    (sampled / "headroom.json").unlink()
    assert "problems that greedy turn 1 gets wrong" not in "\n".join(reachable(out))
    assert reachable(tmp_path / "empty") == []


def test_validation_checks_sit_beside_the_start_in_step_order(tmp_path):
    from cocos.eval.report_correction import validation_checks

    out = tmp_path / "out"
    assert validation_checks(out) == []  # no checks: no section
    write(out / "eval_validation/boost_new/metrics.json", metrics(0.05, 0.05, 0.0, 0.0, 0.0))
    assert validation_checks(out) == []  # the start alone is no comparison
    for step, acc in ((100, 0.08), (50, 0.06), (0, 0.05)):
        write(out / f"train/arm_s0/eval/step_{step}/metrics.json", metrics(acc, acc + 0.01, 0.01, 0.0, 0.01))
    (out / "train/arm_s0/eval/step_140").mkdir()  # a check cut off by the stop: no metrics, no row
    rows = [line for line in validation_checks(out) if line.startswith("| boost_new") or line.startswith("| arm_s0")]
    assert rows[0].startswith("| boost_new (start) | - | 500 | 5.0 ± 1.0 | 5.0 |")
    assert [r.split(" | ")[1] for r in rows[1:]] == ["0", "50", "100"]  # numeric order, not "100" < "50"
    assert rows[-1].startswith("| arm_s0 | 100 | 500 | 8.0 ± 1.0 | 9.0 | 1.0 ± 1.0 |")
    page = build(out, tmp_path / "page").read_text()
    assert "## Held-out checks during training" in page and "| arm_s0 | 50 |" in page


def test_interventions_plot_needs_the_copy_and_correction_metrics(tmp_path):
    from cocos.eval.report_correction import plot_interventions

    out = tmp_path / "out"
    write(out / "eval/boost_new/mbpp/metrics.json", metrics(0.10, 0.10, 0.0, 0.0, 0.0))  # copy_if_wrong None
    assert not plot_interventions(out, tmp_path / "a.png") and not (tmp_path / "a.png").exists()
    write(out / "eval/arm_s0/mbpp/metrics.json", {**metrics(0.10, 0.12, 0.03, 0.01, 0.01), "copy_if_wrong(1,2)": 0.7})
    assert plot_interventions(out, tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 0
    assert "![what each intervention did" in build(out, tmp_path / "page").read_text()
