"""cocos.eval.report_credit: the credit page's numbers are means over seeds with their standard error, per
estimator, and its figures are drawn from the logs."""

import json
import math

from cocos.eval import report_credit


def _log(path, rows, rollouts=()):
    path.mkdir(parents=True)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))


def _cells(text, first):
    """The named row of the page's first table, as {column header: cell}."""
    lines = text.splitlines()
    head = next(line for line in lines if line.startswith("| estimator"))
    row = next(line for line in lines if line.startswith(f"| {first} "))
    return dict(zip([c.strip() for c in head.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))


def _steps(r1, r2, grad, n=3):
    return [{"step": s + 1, "reward@1": r1, "reward@2": r2 + 0.03 * s, "grad_norm": grad + s, "kl": 0.1 * s,
             "delta_i2c": 0.1, "delta_c2i": 0.0} for s in range(n)]


def test_gamma2_table_is_the_mean_over_seeds_with_its_standard_error(tmp_path):
    # rollouts: a regression (r2 < r1) with A > 0, a fix with A < 0, a fix with A > 0; an untrained group (None)
    rollouts = [{"rewards": [1.0, 0.0], "turn_advantages": [0.3, 0.3]},
                {"rewards": [0.0, 1.0], "turn_advantages": [-0.4, -0.4]},
                {"rewards": [0.0, 1.0], "turn_advantages": [0.0, 0.0]},
                {"rewards": [0.0, 0.0], "turn_advantages": None}]
    _log(tmp_path / "train" / "g2_rloo_s0", _steps(0.2, 0.1, 1.0), rollouts)
    _log(tmp_path / "train" / "g2_rloo_s1", _steps(0.4, 0.5, 3.0))
    _log(tmp_path / "train" / "g2_per_turn_s0", _steps(0.3, 0.3, 2.0))
    _log(tmp_path / "train" / "unrelated", _steps(0.9, 0.9, 9.0))  # not an experiment's name: left out
    runs = report_credit.read_logs(tmp_path)
    assert set(runs) == {"g2"} and set(runs["g2"]["rloo"]) == {0, 1}

    page = report_credit.build(tmp_path, tmp_path / "page", budget="test")
    text = page.read_text()
    rloo = _cells(text, "rloo")
    # r1 over seeds: 0.2 and 0.4 -> 0.300 ± 0.100; max grad norm: 3 and 5 -> 4.000 ± 1.000
    assert rloo["r1"] == "0.300 ± 0.100" and rloo["max grad norm"] == "4.000 ± 1.000"
    # r2: seed means 0.13 and 0.53 -> 0.330 ± 0.200; the last turn's trend: the last step minus the first (0.06)
    assert rloo["r2"] == "0.330 ± 0.200" and rloo["r2: last third − first"] == "0.060 ± 0.000"
    # seed 0's rollouts alone (seed 1 has none): RMS sqrt((0.09 + 0.16 + 0) / 3); 1 of 1 regression rewarded,
    # 1 of 2 fixes penalised
    assert rloo["turn-2 advantage RMS"] == f"{math.sqrt(0.25 / 3):.3f}"
    assert rloo["turn-2 regressions with A > 0"] == "1.000" and rloo["turn-2 fixes with A < 0"] == "0.500"
    per_turn = _cells(text, "per-turn")
    assert "±" not in per_turn["r1"] and per_turn["turn-2 advantage RMS"] == "-"  # one seed, no rollouts
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


def test_mean_se():  # the page's means over seeds: cocos.eval.claims_stats.mean_se
    from cocos.eval.claims_stats import mean_se

    assert mean_se([]).mean is None and mean_se([]).se is None
    assert mean_se([2.0]).mean == 2.0 and mean_se([2.0]).se is None
    stat = mean_se([1.0, 2.0, 3.0])
    assert stat.mean == 2.0 and math.isclose(stat.se, 1 / math.sqrt(3))
