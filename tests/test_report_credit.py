"""cocos.eval.report_credit: the credit page's numbers are means over seeds with their standard error, per
estimator, and its figures are drawn from the logs."""

import json
import math

from cocos.eval import report_credit


def _log(path, rows):
    path.mkdir(parents=True)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _steps(r1, r2, grad, n=3):
    return [{"step": s + 1, "reward@1": r1, "reward@2": r2 + 0.03 * s, "grad_norm": grad + s, "kl": 0.1 * s,
             "delta_i2c": 0.1, "delta_c2i": 0.0} for s in range(n)]


def test_gamma2_table_is_the_mean_over_seeds_with_its_standard_error(tmp_path):
    _log(tmp_path / "train" / "g2_rloo_s0", _steps(0.2, 0.1, 1.0))
    _log(tmp_path / "train" / "g2_rloo_s1", _steps(0.4, 0.5, 3.0))
    _log(tmp_path / "train" / "g2_per_turn_s0", _steps(0.3, 0.3, 2.0))
    _log(tmp_path / "train" / "unrelated", _steps(0.9, 0.9, 9.0))  # not an experiment's name: left out
    runs = report_credit.read_logs(tmp_path)
    assert set(runs) == {"g2"} and set(runs["g2"]["rloo"]) == {0, 1}

    page = report_credit.build(tmp_path, tmp_path / "page", budget="test")
    text = page.read_text()
    rloo = next(line for line in text.splitlines() if line.startswith("| rloo"))
    cells = [c.strip() for c in rloo.strip("|").split("|")]
    # r1 over seeds: 0.2 and 0.4 -> 0.300 ± 0.100; max grad norm: 3 and 5 -> 4.000 ± 1.000
    assert cells[3] == "0.300 ± 0.100" and cells[-2] == "4.000 ± 1.000"
    # r2: seed means 0.13 and 0.53 -> 0.330 ± 0.200; the last turn's trend: the last step minus the first (0.06)
    assert cells[4] == "0.330 ± 0.200" and cells[6] == "0.060 ± 0.000"
    per_turn = next(line for line in text.splitlines() if line.startswith("| per-turn"))
    assert "±" not in per_turn.split("|")[4]  # one seed: no standard error
    assert (tmp_path / "page" / "gamma2.png").stat().st_size > 0
    assert not (tmp_path / "page" / "turns3.png").exists() and "(no training log yet)" in text


def test_held_out_table_reads_each_turn_with_its_standard_error(tmp_path):
    m = {"n_problems": 100, "acc@1": 0.1, "se:acc@1": 0.03, "acc@2": 0.12, "acc@3": 0.13,
         "delta_i2c(1,2)": 0.02, "delta_c2i(1,2)": 0.0}
    (tmp_path / "eval" / "base").mkdir(parents=True)
    (tmp_path / "eval" / "base" / "metrics.json").write_text(json.dumps(m))
    lines = report_credit.held_out_table(tmp_path)
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[:5] == ["base", "100", "10.0 ± 3.0", "12.0", "13.0"] and row[5:7] == ["2.0", "0.0"]


def test_mean_se():
    assert report_credit.mean_se([]) == (None, None)
    assert report_credit.mean_se([2.0]) == (2.0, None)
    m, se = report_credit.mean_se([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(se, 1 / math.sqrt(3))
