"""The claims page (cocos.eval.claims, cocos.eval.claims_stats; scripts/claims_report.py is its command) on crafted
run folders (no model): means, standard errors and verdicts."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocos.eval import claims, claims_stats


@pytest.fixture(scope="module")
def cr():
    return SimpleNamespace(**{**vars(claims_stats), **vars(claims)})  # the page and its statistics, under one name


def write_log(out: Path, run: str, seed: int, rows: list[dict]) -> None:
    d = out / "train" / f"{run}_s{seed}"
    d.mkdir(parents=True)
    (d / "log.jsonl").write_text("".join(json.dumps({"step": i + 1, **r}) + "\n" for i, r in enumerate(rows)))


def write_metrics(out: Path, run: str, seed: int, ds: str, m: dict) -> None:
    d = out / "eval" / f"{run}_s{seed}" / ds
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(m))


def r1_log(start: float, end: float, steps: int = 4) -> list[dict]:
    """reward@1 goes from start (first quarter = step 1) to end (last quarter = last step)."""
    return [{"reward@1": start + (end - start) * i / (steps - 1), "reward@2": 0.3, "reward_mean": 0.3,
             "kl@1": 0.1, "kl@2": 0.1, "edit_sim(1,2)": 0.9} for i in range(steps)]


def sem(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def test_stats_and_rule(cr):
    s = cr.mean_se([1.0, 2.0, 4.0])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3) and s.se == pytest.approx(sem([1, 2, 4])) and s.df == 2
    one = cr.mean_se([0.5])
    assert one.se is None and cr.verdict(one, +1)[0] == "not measurable"
    assert "SE unavailable" in cr.verdict(one, +1)[1]
    # arms with the same seeds are paired: one difference per seed
    a, b = {0: 3.0, 1: 3.2, 2: 2.8}, {0: 1.0, 1: 0.8, 2: 1.2}
    d = cr.diff(a, b)
    assert d.paired and d.df == 2 and d.mean == pytest.approx(2.0) and d.se == pytest.approx(sem([2.0, 2.4, 1.6]))
    assert cr.verdict(d, +1)[0] == "confirmed" and cr.verdict(d, -1)[0] == "contradicted"
    # seeds in common but one arm ran more: paired over the common seeds, the other left out and said so
    c = cr.diff(a, {0: 1.0, 1: 0.8, 7: 5.0})
    assert c.paired and c.left_out == 2 and c.n == 2 and c.mean == pytest.approx(2.2) and c.df == 1
    assert "left out" in cr.verdict(c, +1)[1] and "left out" in c.fmt()
    # fewer than 2 seeds in common: unpaired, Welch's SE and degrees of freedom (equal spreads of 3 seeds each: 4)
    u = cr.diff(a, {3: 1.0, 4: 0.8, 5: 1.2})
    assert not u.paired and u.se == pytest.approx(math.sqrt(2) * sem([3, 3.2, 2.8])) and u.df == pytest.approx(4)
    # every seed the same difference: SE 0, no verdict however large d is
    flat = cr.diff({0: 0.0, 1: 0.0}, {0: 0.3, 1: 0.3})
    assert flat.se == 0 and cr.verdict(flat, +1)[0] == cr.verdict(flat, -1)[0] == "not measurable"
    # 3 SE: past the normal 2 SE, but not Student's t with 2 degrees of freedom (4.30); with 29 it is (2.05)
    assert cr.verdict(cr.Stat(3, 3.0, 1.0, df=2, paired=True), +1)[0] == "not measurable"
    assert cr.verdict(cr.Stat(30, 3.0, 1.0, df=29, paired=True), +1)[0] == "confirmed"
    assert cr.t975(2) == pytest.approx(4.303) and cr.t975(1000) == pytest.approx(1.962, abs=1e-3)
    # 1 SE: undecided, with the seeds at which d would pass: the first m with t(m - 1) * SE * sqrt(3 / m) < d
    d1 = cr.Stat(3, 1.0, 1.0, df=2, paired=True)
    v, why, need = cr.verdict(d1, +1)
    m = cr.seeds_needed(d1)
    assert cr.t975(m - 1) * math.sqrt(3 / m) < 1.0 <= cr.t975(m - 2) * math.sqrt(3 / (m - 1))
    assert v == "not measurable" and f"about {m} seeds" in why and need.startswith(f"about {m} seeds per arm")
    # d a sliver of its SE: no seed count is offered, the page says no effect is seen
    v, why, need = cr.verdict(cr.Stat(3, 0.01, 1.0, df=2, paired=True), -1)
    assert v == "not measurable" and "no effect is seen" in why and "about" not in why
    assert need.startswith("no effect is seen")
    assert cr.verdict(cr.Stat(30, 3.0, 1.0, df=29, paired=True), +1)[2] == ""  # a decided test needs nothing


def test_report_confirmed_contradicted_undecided(cr, tmp_path):
    seeds = [0, 1, 2]
    # claim 1, clearly confirmed: r1 falls by ~0.3 under gamma 0, holds under 0.5
    for s, (drop, hold) in enumerate([(0.30, 0.00), (0.32, 0.01), (0.28, -0.01)]):
        write_log(tmp_path, "g0", s, r1_log(0.5, 0.5 - drop))
        write_log(tmp_path, "g0.5", s, r1_log(0.5, 0.5 + hold))
    # claim 2, clearly contradicted: binary preserves more than progressive on both datasets;
    # claim 4, undecided: CoCoS's net correction is noisy around a small positive mean
    net = {0: (0.10, 0.0), 1: (0.0, 0.05), 2: (0.05, 0.08)}  # (i2c, c2i) per seed
    for s in seeds:
        for ds in ("mbpp", "odex"):
            write_metrics(tmp_path, "g0.5", s, ds, {"unit_preserve(1,2)": 0.50 + 0.01 * s, "delta_i2c(1,2)": net[s][0],
                                                   "delta_c2i(1,2)": net[s][1], "delta(1,2)": net[s][0] - net[s][1]})
            write_metrics(tmp_path, "binary", s, ds, {"unit_preserve(1,2)": 0.90 - 0.01 * s})
    res = cr.build(tmp_path, seeds=seeds, budget="test budget")
    c = res["claims"]

    t1a, t1b, t1c = c[1]["tests"]
    # turn-2 gain r2 - r1 at the last step (r2 stays 0.3): under gamma 0 0.3 - (0.5 - drop), under 0.5 0.3 - (0.5 + hold)
    assert t1c["d"].paired and t1c["d"].mean == pytest.approx(0.30) and t1c["d"].se == pytest.approx(sem([0.30, 0.33, 0.27]))
    drops = [-0.30, -0.32, -0.28]
    assert t1a["d"].mean == pytest.approx(sum(drops) / 3) and t1a["d"].se == pytest.approx(sem(drops))
    assert t1b["d"].mean == pytest.approx(-0.30) and t1b["d"].n == 3 and t1b["d"].paired  # same seeds: paired
    assert t1b["d"].se == pytest.approx(sem([-0.30, -0.33, -0.27]))
    assert t1a["verdict"] == t1b["verdict"] == "confirmed"
    assert c[1]["verdict"] == "confirmed at this scale"
    assert c[1]["rows"][0][-1].mean == pytest.approx(0.9)  # training's turn-2 edit similarity, beside the rewards

    for t in c[2]["tests"]:
        assert t["d"].mean == pytest.approx(0.51 - 0.89) and t["verdict"] == "contradicted"
    assert c[2]["verdict"] == "contradicted at this scale"

    t4 = c[4]["tests"][0]  # mbpp: Δi→c − Δc→i of CoCoS
    nets = [0.10, -0.05, -0.03]
    assert t4["d"].mean == pytest.approx(sum(nets) / 3) and t4["d"].se == pytest.approx(sem(nets))
    assert t4["verdict"] == "not measurable"
    assert c[4]["verdict"] == "not measurable at this scale"  # (SCoRe missing too: no data)
    assert c[3]["verdict"] == "not measurable at this scale"  # no SCoRe run at all

    page = res["page"].read_text()
    assert "## Verdict rule" in page and "more than t SE(d)" in page and "paired" in page
    assert "**Verdict: confirmed at this scale.**" in page and "**Verdict: contradicted at this scale.**" in page
    assert "SCoRe (`score`): n = 0" in page and "test budget" in page
    assert (tmp_path / "claim1_rewards.png").exists() and (tmp_path / "claim2_unit.png").exists()


def test_one_seed_gives_no_verdict(cr, tmp_path):
    write_log(tmp_path, "g0", 0, r1_log(0.5, 0.0))
    write_log(tmp_path, "g0.5", 0, r1_log(0.5, 0.5))
    res = cr.build(tmp_path)
    for t in res["claims"][1]["tests"]:
        assert t["d"].se is None and t["verdict"] == "not measurable" and "SE unavailable" in t["why"]
    assert res["claims"][1]["verdict"] == "not measurable at this scale"
    assert "(SE n/a)" in res["page"].read_text()


def test_preserve_of_a_seed_with_nothing_passed_at_turn_1_is_missing(cr, tmp_path):
    # metrics.json gives 1.0 with base 0 (no test passed at turn 1: a convention); the report must not average it
    write_metrics(tmp_path, "binary", 0, "mbpp", {"unit_preserve(1,2)": 0.5, "unit_preserve_base(1,2)": 2})
    write_metrics(tmp_path, "binary", 1, "mbpp", {"unit_preserve(1,2)": 1.0, "unit_preserve_base(1,2)": 0})
    runs = cr.load(tmp_path, None)
    assert runs["binary"][0]["evals"]["mbpp"]["unit_preserve_measured"] == 0.5
    assert runs["binary"][1]["evals"]["mbpp"]["unit_preserve_measured"] is None
    # the progressive arm undefined in every seed: the test says why in the words of unit preserve; a test on a
    # missing run (SCoRe) does not
    write_metrics(tmp_path, "g0.5", 0, "mbpp", {"unit_preserve(1,2)": 1.0, "unit_preserve_base(1,2)": 0})
    res = cr.build(tmp_path)
    t2 = res["claims"][2]["tests"][0]
    assert t2["verdict"] == "not measurable" and "no test passed at turn 1" in t2["why"]
    t3 = res["claims"][3]["tests"][0]
    assert "unit preserve" not in t3["why"] and "missing or not finished" in t3["why"]


def test_an_unfinished_run_is_listed_not_counted(cr, tmp_path):
    # two finished seeds of gamma 0 (4 steps) and one still at step 2: its "last quarter" would be step 2, not
    # comparable with the others' step 4, so the mean and SE come from the finished two
    write_log(tmp_path, "g0", 0, r1_log(0.5, 0.2))
    write_log(tmp_path, "g0", 1, r1_log(0.5, 0.3))
    write_log(tmp_path, "g0", 2, r1_log(0.5, 0.9)[:2])
    res = cr.build(tmp_path)
    d = res["claims"][1]["tests"][0]["d"]
    assert d.n == 2 and d.mean == pytest.approx(-0.25)
    assert "(not counted, unfinished: s2 at step 2)" in res["page"].read_text()


def test_paired_steps_differ_step_by_step_on_common_seeds(cr, tmp_path):
    write_log(tmp_path, "g0", 0, r1_log(0.5, 0.2))
    write_log(tmp_path, "g0", 1, r1_log(0.5, 0.2))  # no gamma 0.5 run with seed 1: left out
    write_log(tmp_path, "g0.5", 0, r1_log(0.5, 0.8)[:3])  # 3 steps: only those compare
    runs = cr.load(tmp_path, None)
    runs["g0.5"][0] = {"log": [{"step": i + 1, **r} for i, r in enumerate(r1_log(0.5, 0.8)[:3])], "evals": {}}  # (load sets a shorter run aside as unfinished)
    p = cr.paired_steps(runs, "g0", "g0.5", "reward@1", "d")
    assert list(p) == [0]
    assert [r["step"] for r in p[0]["log"]] == [1, 2, 3]
    assert [r["d"] for r in p[0]["log"]] == pytest.approx([0.0, -0.2, -0.4])


def test_a_step_that_trained_no_group_has_no_kl(cr, tmp_path):
    # SCoRe's steps 3-4 trained no group (trained_frac 0; older trainers logged their KL as 0.0): they have no KL,
    # and the first and last quarters come from the two steps that measured one
    log = [{"reward@1": 0.3, "reward@2": 0.3, "reward_mean": 0.3, "kl@1": v, "kl@2": 0.1, "trained_frac": f}
           for v, f in [(1.0, 0.5), (3.0, 0.25), (0.0, 0.0), (0.0, 0.0)]]
    write_log(tmp_path, "score", 0, log)
    runs = cr.load(tmp_path, None)
    kl1 = [r["kl@1"] for r in runs["score"][0]["log"]]
    assert kl1 == [1.0, 3.0, None, None]
    assert cr.first_last(runs["score"][0]["log"], "kl@1") == (1.0, 3.0)


def test_turn_2_copying_is_named_as_what_claims_2_and_4_need(cr, tmp_path):
    for s in (0, 1):
        for ds in ("mbpp", "odex"):
            write_metrics(tmp_path, "g0.5", s, ds, {"unit_preserve(1,2)": 1.0, "edit_sim(1,2)": 0.99})
            write_metrics(tmp_path, "binary", s, ds, {"unit_preserve(1,2)": 1.0, "edit_sim(1,2)": 0.97 + 0.01 * s})
    page = cr.build(tmp_path)["page"].read_text()
    assert page.count("- Every evaluated model copies its turn-1 code at turn 2 (edit similarity 97.0-99.0% over 8") == 2
    # each undecided test follows as its own line, with what would decide it
    claim2 = page[page.index("## Claim 2"):page.index("## Claim 3")]
    need = claim2[claim2.index("What would be needed:"):].splitlines()
    assert need[3].startswith("- mbpp: unit preserve, progressive − binary > 0: ")
    # one evaluation that rewrites: no such sentence
    write_metrics(tmp_path, "binary", 1, "odex", {"unit_preserve(1,2)": 1.0, "edit_sim(1,2)": 0.60})
    assert "copies its turn-1 code" not in cr.build(tmp_path)["page"].read_text()


def test_published_numbers_redraw_the_same_page(cr, tmp_path):
    out, pub = tmp_path / "out", tmp_path / "pub"
    for s in (0, 1, 2):
        write_log(out, "g0", s, r1_log(0.5, 0.4 - 0.02 * s))
        write_log(out, "g0.5", s, r1_log(0.5, 0.5 + 0.01 * s))
        (out / "train" / f"g0_s{s}" / "checkpoints" / "step_4").mkdir(parents=True)  # not published
        for ds in ("mbpp", "odex"):
            for run in ("g0.5", "binary"):
                write_metrics(out, run, s, ds, {"unit_preserve(1,2)": 0.9 - 0.01 * s, "unit_preserve_base(1,2)": 10})
                (out / "eval" / f"{run}_s{s}" / ds / "samples.jsonl").write_text("{}\n")  # not published
    first = cr.build(out, budget="b", publish=pub)
    assert (pub / "claims.md").exists() and (pub / "claim1_rewards.png").exists()
    assert "`runs/` beside it" in (pub / "claims.md").read_text()
    copied = sorted(str(p.relative_to(pub / "runs")) for p in (pub / "runs").rglob("*") if p.is_file())
    assert len(copied) == 6 + 12 and not any("samples" in p or "checkpoints" in p for p in copied)
    again = cr.build(pub / "runs", budget="b")
    for i in first["claims"]:
        assert again["claims"][i]["verdict"] == first["claims"][i]["verdict"]
        assert again["claims"][i]["rows"] == first["claims"][i]["rows"]
        assert [t["d"] for t in again["claims"][i]["tests"]] == [t["d"] for t in first["claims"][i]["tests"]]
