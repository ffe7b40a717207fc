"""`cocos report` on small fixture run folders built here: files exist, table numbers equal metrics.json."""

import json
import re
from pathlib import Path

import pytest

from cocos.cli import main
from cocos.errors import UserError
from cocos.eval.report import build_report, pct
from cocos.eval.report_plots import per_turn_series
from cocos.eval.runs import read_run


def _metrics(a1, a2, i2c, c2i, n=20, **extra):
    m = {
        "acc@1": a1, "acc@2": a2, "delta(1,2)": a2 - a1, "delta_i2c(1,2)": i2c, "delta_c2i(1,2)": c2i,
        "unit_improve(1,2)": i2c + 0.05, "unit_worsen(1,2)": c2i + 0.1, "unit_preserve(1,2)": 1 - c2i, "edit_sim(1,2)": 0.8,
        "n_problems": n,
    }
    m.update(extra)
    return m


def _eval_run(root: Path, name: str, metrics: dict, with_samples: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.json").write_text(json.dumps({"model": "tiny", "turns": 2}))
    if with_samples:
        rows = [
            {"task_id": 11 + i, "turns": [{"text": "def f():\n    return 1\n[DONE]", "completion_ids": list(range(10 + i))},
                                          {"text": "def f():\n    return 2\n[DONE]", "completion_ids": list(range(20))}]}
            for i in range(3)
        ]
        (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _train_run(root: Path, name: str, gamma: float, finals: list[dict]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"method: cocos\nreward: progressive\ngamma: {gamma}\nmode: trajectory\n")
    log = [{"step": s, "reward@1": 0.1 * s, "reward@2": 0.12 * s + gamma, "acc@1": 0.1, "acc@2": 0.2, "kl": 0.01 * s,
            "kl@1": 0.004 * s, "kl@2": 0.006 * s, "length@1": 50 + s, "length@2": 60 + s, "edit_sim(1,2)": 0.9} for s in range(1, 6)]
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 6, "rew')  # torn last line
    for step, m in zip((0, 5), finals):
        (d / "eval" / f"step_{step}").mkdir(parents=True)
        (d / "eval" / f"step_{step}" / "metrics.json").write_text(json.dumps(m))
    return d


def _table_rows(md: str, header_start: str) -> dict[str, list[str]]:
    """Rows of the first Markdown table whose header starts with `header_start`, keyed by method."""
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_report_on_mixed_runs(tmp_path):
    base = _eval_run(tmp_path, "base", _metrics(0.30, 0.25, 0.05, 0.10))
    boost = _eval_run(tmp_path, "boost", _metrics(0.40, 0.45, 0.10, 0.05))
    g05 = _train_run(tmp_path, "cocos_g0.5", 0.5, [_metrics(0.40, 0.45, 0.10, 0.05), _metrics(0.42, 0.50, 0.12, 0.04)])
    g0 = _train_run(tmp_path, "cocos_g0", 0.0, [_metrics(0.40, 0.45, 0.10, 0.05), _metrics(0.35, 0.48, 0.15, 0.02)])
    empty = tmp_path / "crashed"
    empty.mkdir()
    out = tmp_path / "report"
    assert main(["report", str(base), str(boost), str(g05), str(g0), str(empty), str(tmp_path / "never_run"), "--out", str(out),
                 "--label", "Base", "--label", "Boost", "--label", "CoCoS γ=0.5", "--label", "CoCoS γ=0", "--label", "Crashed",
                 "--label", "Never"]) == 0
    md = (out / "report.md").read_text()
    for png in ("accuracy.png", "deltas.png", "unit.png", "reward_curves.png", "lengths.png", "length_curves.png",
                "kl_edit_sim_curves.png", "kl_turn_curves.png"):
        assert (out / png).stat().st_size > 1000, png
        assert f"({png})" in md
    # the delta table, paper layout, equals the metrics files (train runs: last eval)
    rows = _table_rows(md, "| Method | acc@t1")
    expect = {
        "Base": json.loads((base / "metrics.json").read_text()),
        "Boost": json.loads((boost / "metrics.json").read_text()),
        "CoCoS γ=0.5": json.loads((g05 / "eval/step_5/metrics.json").read_text()),
        "CoCoS γ=0": json.loads((g0 / "eval/step_5/metrics.json").read_text()),
    }
    assert set(rows) == set(expect)  # the run without metrics is not in the table
    for label, m in expect.items():
        cols = ["acc@1", "acc@2", "delta(1,2)", "delta_i2c(1,2)", "delta_c2i(1,2)"]
        assert rows[label] == [f"{100 * m[c]:.1f}" for c in cols], label
    unit = _table_rows(md, "| Method | unit improve")
    for label, m in expect.items():
        assert unit[label] == [pct(m[f"{c}(1,2)"]) for c in ("unit_improve", "unit_worsen", "unit_preserve", "edit_sim")]
    assert "Scored before 2026-11-27" not in md
    # what is missing is said, not silently dropped
    assert "Crashed: no metrics.json" in md and "Never: folder does not exist" in md
    assert re.search(r"eval/step_5/metrics\.json", md)


def test_report_eval_only_skips_curves(tmp_path):
    a = _eval_run(tmp_path, "self_refine", _metrics(0.2, 0.22, 0.04, 0.02), with_samples=False)
    out = tmp_path / "r"
    build_report([a], out)
    md = (out / "report.md").read_text()
    assert "No training run among the folders" in md
    assert "no samples.jsonl" in md
    assert not (out / "reward_curves.png").exists()
    assert _table_rows(md, "| Method | acc@t1")["self_refine"][0] == "20.0"


def test_report_marks_runs_scored_with_the_old_unit_preserve(tmp_path):
    old = _metrics(0.1, 0.1, 0.0, 0.0)
    del old["unit_worsen(1,2)"]  # a metrics.json written before unit_worsen existed
    a = _eval_run(tmp_path, "old_run", old, with_samples=False)
    b = _eval_run(tmp_path, "new_run", _metrics(0.1, 0.1, 0.0, 0.0), with_samples=False)
    build_report([a, b], tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    unit = _table_rows(md, "| Method | unit improve")
    assert unit["old_run"][1] == "-" and unit["new_run"][1] == "10.0"
    assert "Scored before 2026-11-27 (old_run)" in md


def test_train_run_without_eval_and_errors(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "log.jsonl").write_text(json.dumps({"step": 1, "reward@1": 0.5, "reward@2": 0.7, "kl@1": 0.1}) + "\n")
    run = read_run(d)
    assert run.kind == "train" and not run.metrics
    assert per_turn_series(run.log, "reward") == {1: [(1, 0.5)], 2: [(1, 0.7)]}
    assert per_turn_series(run.log, "kl") == {1: [(1, 0.1)]}
    assert per_turn_series([{"step": 3, "reward@1": 0.2, "reward@2": 0.4, "reward_mean": 0.3}], "reward") == {1: [(3, 0.2)], 2: [(3, 0.4)]}
    # a step that trained no group measured no KL: an older log's 0.0 there (and the trainer's null now) is no point
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "kl": 0.3, "kl@1": 0.2, "kl@2": 0.1, "trained_frac": 0.5},
        {"step": 2, "kl": 0.0, "kl@1": 0.0, "kl@2": 0.0, "trained_frac": 0.0},
        {"step": 3, "kl": None, "kl@1": None, "kl@2": None, "trained_frac": 0.0}]))
    assert per_turn_series(read_run(d).log, "kl") == {1: [(1, 0.2)], 2: [(1, 0.1)]}
    with pytest.raises(UserError, match="none of the run folders exists"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(UserError, match="--label"):
        build_report([d], tmp_path / "out", labels=["a", "b"])


def test_runs_table_names_the_extraction_rule(tmp_path):
    strict = _eval_run(tmp_path, "strict_run", _metrics(0.2, 0.3, 0.1, 0.0, extraction="strict"), with_samples=False)
    old = _eval_run(tmp_path, "old_run", _metrics(0.4, 0.5, 0.1, 0.0), with_samples=False)  # before the field
    build_report([strict], tmp_path / "one")
    md = (tmp_path / "one" / "report.md").read_text()
    assert _table_rows(md, "| Method | kind")["strict_run"][4] == "strict" and "not comparable" not in md
    build_report([strict, old], tmp_path / "two")
    md = (tmp_path / "two" / "report.md").read_text()
    rows = _table_rows(md, "| Method | kind")
    assert rows["old_run"][4] == "lenient (not recorded)" and "their accuracies are not comparable" in md


def test_turn_pair_tables_hold_only_runs_that_reached_the_later_turn(tmp_path):
    from cocos.eval.report import _group_title, delta_table
    from cocos.eval.runs import Run

    two = Run(label="two turns", path=tmp_path, kind="eval", metrics=_metrics(0.1, 0.1, 0.0, 0.0))
    five = Run(label="five turns", path=tmp_path, kind="eval", metrics={
        **_metrics(0.1, 0.2, 0.1, 0.0), "acc@5": 0.3, "delta(1,5)": 0.2, "delta_i2c(1,5)": 0.2, "delta_c2i(1,5)": 0.0})
    table = delta_table([two, five], (1, 5))
    assert table[0] == "| Method | acc@t1 | acc@t5 | Δ(t1,t5) | Δi→c(t1,t5) | Δc→i(t1,t5) |"
    assert [row.split("|")[1].strip() for row in table[2:]] == ["five turns"]  # the 2-turn run has no turn 5
    assert len(delta_table([two, five], (1, 2))) == 4  # both reached turn 2
    # training runs' numbers are their own evaluation's, named as such (not "other runs")
    train = Run(label="CoCoS", path=tmp_path, kind="train", config={"eval_dataset": "mbpp", "eval_split": "validation"})
    assert _group_title(None, [train]) == "the training runs' own last evaluation (MBPP validation)"
    assert _group_title("odex", [two]) == "ODEX"
