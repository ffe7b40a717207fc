"""`cocos report` in the paper's layout: methods as rows, MBPP / HumanEval / ODEX as column groups of acc@1, acc@2, Δ,
Δi→c, Δc→i, each value with its standard error and the budget; the unit-level table; acc@t over 5 turns; the RL
rows' per-turn reward and KL curves. Fixture run folders are built here with known numbers."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pytest

from cocos.cli import main
from cocos.eval.report_paper import cell, proportion_se, standard_error
from cocos.eval.runs import read_run

DATASETS = ("mbpp", "humaneval", "odex")


def _samples(n: int, turns: int, passed_t1: list[int]) -> list[dict]:
    """n problems of 3 tests; turn 1 passes passed_t1[i] tests and writes code 'x = i', later turns 'x = i + 0'."""
    rows = []
    for i in range(n):
        ts = [{"text": f"x = {i}\n[DONE]", "code": f"x = {i}", "passed": passed_t1[i], "total": 3, "reward": 0.0}]
        ts += [{"text": f"x = {i} + 0\n[DONE]", "code": f"x = {i} + 0", "passed": 3, "total": 3, "reward": 1.0}
               for _ in range(turns - 1)]
        rows.append({"task_id": 11 + i, "turns": ts})
    return rows


def _eval(root: Path, name: str, dataset: str, accs: list[float], i2c: float, c2i: float, n: int = 20) -> Path:
    d = root / name
    d.mkdir(parents=True)
    T = len(accs)
    m = {f"acc@{t}": a for t, a in enumerate(accs, 1)}
    for a in range(1, T):
        m |= {f"delta({a},{a + 1})": accs[a] - accs[a - 1], f"delta_i2c({a},{a + 1})": i2c, f"delta_c2i({a},{a + 1})": c2i,
              f"unit_improve({a},{a + 1})": 0.25, f"unit_worsen({a},{a + 1})": 0.1, f"unit_preserve({a},{a + 1})": 0.9,
              f"edit_sim({a},{a + 1})": 0.8}
    m |= {"n_problems": n, "n_samples": n, "extraction": "strict"}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.json").write_text(json.dumps({"model": "tiny", "dataset": dataset, "split": "test", "turns": T}))
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _samples(n, T, [i % 4 for i in range(n)])))
    return d


def _train(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("method: score\nreward: binary\ngamma: 0.5\n")
    (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "reward@1": 0.1 * s, "reward@2": 0.2 * s, "kl@1": 0.01 * s,
                                                     "kl@2": 0.02 * s, "kl": 0.03 * s}) + "\n" for s in range(1, 5)))
    return d


def _html_rows(md: str, caption_start: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column-group headers, {method: cells}) of the HTML table whose caption starts with `caption_start`."""
    block = md[md.index(f"<caption>{caption_start}"):]
    block = block[: block.index("</table>")]
    groups = re.findall(r'<th colspan="\d+">([^<]*)</th>', block)
    rows = {}
    for tr in re.findall(r"<tr><td>(.*?)</tr>", block):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", "<td>" + tr)]
        rows[cells[0]] = cells[1:]
    return groups, rows


@pytest.fixture()
def comparison(tmp_path):
    dirs, labels = [], []
    numbers = {"Boost": ([0.30, 0.35], 0.10, 0.05), "Self-Corrector": ([0.30, 0.45], 0.20, 0.05),
               "ReVISE": ([0.40, 0.40], 0.0, 0.0)}
    for ds_i, ds in enumerate(DATASETS):
        for label, (accs, i2c, c2i) in numbers.items():
            accs = [a + 0.05 * ds_i for a in accs]
            dirs.append(_eval(tmp_path, f"{label}_{ds}", ds, accs, i2c, c2i, n=20 + 10 * ds_i))
            labels.append(label)
    # the turn analysis: 5-turn runs of two methods on MBPP, beside their 2-turn runs
    dirs.append(_eval(tmp_path, "Boost_mbpp_5", "mbpp", [0.30, 0.35, 0.36, 0.36, 0.37], 0.10, 0.05))
    dirs.append(_eval(tmp_path, "SC_mbpp_5", "mbpp", [0.30, 0.45, 0.50, 0.52, 0.52], 0.20, 0.05))
    labels += ["Boost", "Self-Corrector"]
    dirs.append(_train(tmp_path, "score_train"))
    labels.append("SCoRe")
    out = tmp_path / "report"
    args = ["report", *map(str, dirs), "--out", str(out), "--budget", "small (30 problems per dataset)"]
    for lab in labels:
        args += ["--label", lab]
    assert main(args) == 0
    return out, (out / "report.md").read_text(), dict(zip(dirs, labels))


def test_paper_table_layout_values_and_standard_errors(comparison):
    out, md, _ = comparison
    groups, rows = _html_rows(md, "Self-correction from turn 1 to turn 2")
    assert groups == ["MBPP (n=20)", "HumanEval (n=30)", "ODEX (n=40)"]
    assert list(rows) == ["Boost", "Self-Corrector", "ReVISE"] and all(len(c) == 15 for c in rows.values())
    assert "budget small (30 problems per dataset)" in md
    # Self-Corrector on HumanEval (n=30): acc 0.35 -> 0.50, Δi→c 0.20, Δc→i 0.05; the 2-turn run, not the 5-turn one
    n = 30
    se = lambda p: 100 * math.sqrt(p * (1 - p) / n)  # noqa: E731
    d_se = 100 * math.sqrt((0.20 + 0.05 - 0.15 ** 2) / n)
    assert rows["Self-Corrector"][5:10] == [f"35.0 ± {se(0.35):.1f}", f"50.0 ± {se(0.50):.1f}", f"15.0 ± {d_se:.1f}",
                                            f"20.0 ± {se(0.20):.1f}", f"5.0 ± {se(0.05):.1f}"]
    assert rows["ReVISE"][2] == "0.0 ± 0.0" and rows["Boost"][0] == f"30.0 ± {100 * math.sqrt(0.3 * 0.7 / 20):.1f}"
    assert "sqrt(p(1−p)/n)" in md  # the standard error is explained


def test_unit_table_takes_its_errors_from_the_samples(comparison):
    _, md, runs = comparison
    groups, rows = _html_rows(md, "Unit level")
    assert len(groups) == 3 and list(rows) == ["Boost", "Self-Corrector", "ReVISE"]
    mbpp_boost = read_run(next(d for d, lab in runs.items() if d.name == "Boost_mbpp"))
    # unit preserve is pooled over the tests passed at turn 1: 0+1+2+3 repeated over 20 problems = 30 tests
    assert standard_error(mbpp_boost, "unit_preserve(1,2)") == pytest.approx(proportion_se(0.9, 30))
    assert rows["Boost"][:3] == [f"25.0 ± {100 * proportion_se(0.25, 20):.1f}", f"10.0 ± {100 * proportion_se(0.1, 20):.1f}",
                                 f"90.0 ± {100 * proportion_se(0.9, 30):.1f}"]
    assert rows["Boost"][3] == cell(mbpp_boost, "edit_sim(1,2)") and not rows["Boost"][3].endswith("?")


def test_turn_analysis_curves_and_per_dataset_details(comparison):
    out, md, _ = comparison
    assert (out / "acc_by_turn.png").stat().st_size > 1000 and "(acc_by_turn.png)" in md
    table = md[md.index("MBPP (n=20), acc@t (%):"):].split("\n\n")[1].splitlines()
    assert table[0] == "| Method | acc@1 | acc@2 | acc@3 | acc@4 | acc@5 |"
    assert table[3].startswith("| Self-Corrector | 30.0 ± ") and f"52.0 ± {100 * proportion_se(0.52, 20):.1f}" in table[3]
    assert len(table) == 4  # only the methods evaluated over 5 turns
    # RL rows: per-turn reward and KL curves from log.jsonl's reward@t and kl@t
    assert (out / "reward_curves.png").stat().st_size > 1000 and (out / "kl_turn_curves.png").stat().st_size > 1000
    # the detailed sections come once per dataset, the 5-turn runs named as such
    for ds in DATASETS:
        assert (out / f"accuracy_{ds}.png").exists() and (out / f"deltas_{ds}.png").exists()
    assert "## Self-correction, turn 1 → turn 2: HumanEval" in md
    assert "| Self-Corrector (5 turns) |" in md and (out / "deltas_4_5_mbpp.png").exists()
    assert not (out / "accuracy.png").exists()


def test_runs_without_a_dataset_get_no_paper_table(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"acc@1": 0.5, "acc@2": 0.5, "delta(1,2)": 0.0, "delta_i2c(1,2)": 0.0,
                                                "delta_c2i(1,2)": 0.0, "n_problems": 4}))
    assert main(["report", str(d), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "The paper's table" not in md and (tmp_path / "r" / "accuracy.png").exists()
    assert cell(read_run(d), "acc@1") == f"50.0 ± {100 * math.sqrt(0.25 / 4):.1f}"
    assert cell(read_run(d), "edit_sim(1,2)") == "-"


def test_unit_preserve_with_no_test_passed_at_turn_1_reads_n_a(tmp_path):
    """metrics.json's 100% is a convention when nothing passed at turn 1: both tables say n/a, not a measurement."""
    from cocos.eval.report import unit_table

    nothing = _eval(tmp_path, "nothing", "mbpp", [0.0, 0.0], 0.0, 0.0, n=4)
    m = json.loads((nothing / "metrics.json").read_text())
    (nothing / "metrics.json").write_text(json.dumps(m | {"unit_preserve(1,2)": 1.0, "unit_preserve_base(1,2)": 0}))
    some = _eval(tmp_path, "some", "mbpp", [0.0, 0.0], 0.0, 0.0, n=4)
    m = json.loads((some / "metrics.json").read_text())
    (some / "metrics.json").write_text(json.dumps(m | {"unit_preserve_base(1,2)": 6}))
    # a run scored before the count was recorded: from its samples (0 tests passed at turn 1 on every problem)
    old = _eval(tmp_path, "old", "mbpp", [0.0, 0.0], 0.0, 0.0, n=4)
    (old / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _samples(4, 2, [0, 0, 0, 0])))
    r_nothing, r_some, r_old = read_run(nothing), read_run(some), read_run(old)
    assert cell(r_nothing, "unit_preserve(1,2)") == "n/a" and cell(r_old, "unit_preserve(1,2)") == "n/a"
    assert cell(r_some, "unit_preserve(1,2)").startswith("90.0 ± ")
    table = "\n".join(unit_table([r_nothing, r_some], (1, 2)))
    assert "| n/a |" in table and "| 90.0 |" in table
