"""The page of scripts/credit.sh: per-turn credit against trajectory RLOO in training.

    python -m cocos.eval.report_credit runs/credit_cpu --out docs/results/credit/training

Reads OUT/train/<run>/log.jsonl (runs named g2_<estimator>_s<seed> and t3_<estimator>_s<seed>) and
OUT/eval/<model>/metrics.json. Writes credit_training.md with a table per experiment (each number a mean over seeds
± its standard error over seeds, or over problems for the held-out evaluation) and two figures.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from cocos.eval.claims_stats import Stat, mean_se
from cocos.eval.report import markdown_table, page_main, pct
from cocos.eval.report_paper import number, pyplot, save_figure

_RUN = re.compile(r"^(?P<exp>[a-z0-9]+)_(?P<est>[a-z_]+)_s(?P<seed>\d+)$")
ESTIMATORS = ("rloo", "per_turn")


def read_logs(out: Path) -> dict[str, dict[str, dict[int, list[dict]]]]:
    """{experiment: {estimator: {seed: log records}}} from OUT/train/*/log.jsonl (runs without a log are left out)."""
    runs: dict[str, dict[str, dict[int, list[dict]]]] = {}
    for log in sorted((out / "train").glob("*/log.jsonl")):
        m = _RUN.match(log.parent.name)
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if m and recs:
            runs.setdefault(m["exp"], {}).setdefault(m["est"], {})[int(m["seed"])] = recs
    return runs


def read_rollouts(out: Path, name: str) -> list[dict]:
    """OUT/train/<name>/rollouts.jsonl: one record per trajectory per step (rewards, turn_advantages)."""
    path = out / "train" / name / "rollouts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def turn_credit(rollouts: list[dict], turns: int) -> dict[str, float | None]:
    """What the last turn's tokens were told, over the trained trajectories: the RMS of its advantage, and how often
    a regression (r_T < r_{T-1}) got a positive advantage and a fix (r_T > r_{T-1}) a negative one."""
    t = turns - 1
    trained = [r for r in rollouts if r.get("turn_advantages") and r["turn_advantages"][t] is not None]
    adv = [r["turn_advantages"][t] for r in trained]
    worse = [r["turn_advantages"][t] for r in trained if r["rewards"][t] < r["rewards"][t - 1]]
    better = [r["turn_advantages"][t] for r in trained if r["rewards"][t] > r["rewards"][t - 1]]
    return {"adv_rms_last": math.sqrt(sum(a * a for a in adv) / len(adv)) if adv else None,
            "regressions_rewarded": sum(a > 0 for a in worse) / len(worse) if worse else None,
            "fixes_penalised": sum(a < 0 for a in better) / len(better) if better else None}


def fmt(stat: Stat, digits: int = 3) -> str:
    """A mean over seeds and its SE (none with one seed); '-' without a value."""
    if stat.mean is None:
        return "-"
    return f"{stat.mean:.{digits}f}" + ("" if stat.se is None else f" ± {stat.se:.{digits}f}")


def values(log: list[dict], key: str) -> list[float]:
    return [v for r in log if (v := number(r.get(key))) is not None]


def run_summary(log: list[dict], turns: int) -> dict[str, float | None]:
    """One run's numbers: rewards per turn and the turn-T gain over all its steps, their change from the first
    third of the steps to the last, the largest gradient norm and the last KL (the signs of instability)."""
    third = max(1, len(log) // 3)

    def avg(recs, key):
        v = values(recs, key)
        return sum(v) / len(v) if v else None

    out: dict[str, float | None] = {}
    for t in range(1, turns + 1):
        out[f"reward@{t}"] = avg(log, f"reward@{t}")
    first, last = avg(log[:third], f"reward@{turns}"), avg(log[-third:], f"reward@{turns}")
    out["gain"] = None if out["reward@1"] is None else out[f"reward@{turns}"] - out["reward@1"]
    out["trend"] = None if first is None or last is None else last - first
    out["i2c"], out["c2i"] = avg(log, "delta_i2c"), avg(log, "delta_c2i")
    out["grad_mean"] = avg(log, "grad_norm")
    out["grad_max"] = max(values(log, "grad_norm"), default=None)
    kls = values(log, "kl")
    out["kl_last"] = kls[-1] if kls else None
    return out


def training_table(exp: str, by_est: dict[str, dict[int, list[dict]]], turns: int, out: Path | None = None) -> list[str]:
    """One row per estimator of experiment `exp` (the runs OUT/train/<exp>_<estimator>_s<seed>)."""
    cols = [f"reward@{t}" for t in range(1, turns + 1)] + ["gain", "trend", "i2c", "c2i", "grad_mean", "grad_max",
                                                           "kl_last", "adv_rms_last", "regressions_rewarded",
                                                           "fixes_penalised"]
    head = ["estimator", "seeds", "steps"] + [f"r{t}" for t in range(1, turns + 1)] + [
        f"r{turns} − r1", f"r{turns}: last third − first", "Δi→c (batch)", "Δc→i (batch)", "mean grad norm",
        "max grad norm", "KL at end", f"turn-{turns} advantage RMS", f"turn-{turns} regressions with A > 0",
        f"turn-{turns} fixes with A < 0"]
    rows = []
    for est in ESTIMATORS:
        seeds = by_est.get(est, {})
        if not seeds:
            continue
        sums = [{**run_summary(log, turns), **turn_credit(read_rollouts(out, f"{exp}_{est}_s{seed}") if out else [],
                                                          turns)} for seed, log in seeds.items()]
        steps = "/".join(str(len(log)) for log in seeds.values())
        row = [est.replace("_", "-"), " ".join(map(str, seeds)), steps]
        for c in cols:
            row.append(fmt(mean_se(s[c] for s in sums)))
        rows.append(row)
    return markdown_table(head, rows) if rows else ["(no training log yet)"]


def held_out_table(out: Path, turns: int = 3) -> list[str]:
    rows = []
    for name in ["base"] + [f"t3_{e}_s0" for e in ESTIMATORS]:
        path = out / "eval" / name / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        row = [name, str(m.get("n_problems", "-"))]
        for t in range(1, turns + 1):
            se = number(m.get(f"se:acc@{t}"))
            row.append(pct(m.get(f"acc@{t}")) + ("" if se is None else f" ± {100 * se:.1f}"))
        for a, b in ((1, 2), (2, 3)):
            row += [pct(m.get(f"delta_i2c({a},{b})")), pct(m.get(f"delta_c2i({a},{b})")),
                    pct(m.get(f"edit_sim_if_wrong({a},{b})"))]
        rows.append(row)
    head = ["model", "problems"] + [f"acc@{t}" for t in range(1, turns + 1)] + [
        "Δi→c(1,2)", "Δc→i(1,2)", "edit sim if wrong (1,2)", "Δi→c(2,3)", "Δc→i(2,3)", "edit sim if wrong (2,3)"]
    return markdown_table(head, rows) if rows else ["(no held-out evaluation yet)"]


def plot_runs(by_est: dict[str, dict[int, list[dict]]], keys: list[str], path: Path) -> bool:
    """One panel per key: each estimator's mean over seeds per step, with a band of ± one SE where seeds > 1."""
    if not by_est:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for est, color in zip(ESTIMATORS, ("tab:blue", "tab:orange")):
            logs = list(by_est.get(est, {}).values())
            steps = sorted({r["step"] for log in logs for r in log if number(r.get(key)) is not None})
            if not steps:
                continue
            ms, lo, hi = [], [], []
            for s in steps:
                stat = mean_se(number(r.get(key)) for log in logs for r in log if r["step"] == s)
                ms.append(stat.mean)
                lo.append(stat.mean - (stat.se or 0.0))
                hi.append(stat.mean + (stat.se or 0.0))
            ax.plot(steps, ms, color=color, label=f"{est.replace('_', '-')} ({len(logs)} seed(s))")
            if len(logs) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)
    return True


def build(out: Path, page: Path, budget: str = "") -> Path:
    page.mkdir(parents=True, exist_ok=True)
    runs = read_logs(out)
    md = ["# Per-turn credit against trajectory RLOO in training", ""]
    if budget:
        md += [f"Budget: {budget}", ""]
    md += ["Training numbers are per-step batch means over each run's steps (temperature 0.9 rollouts on the training "
           "problems), then the mean over seeds ± its standard error over seeds. \"last third − first\" is the change "
           "of the last turn's reward from the first third of the steps to the last; a collapse shows there, and in "
           "the gradient norm and the KL.", ""]
    md += ["## gamma = 2, two turns", ""] + training_table("g2", runs.get("g2", {}), 2, out) + [""]
    if plot_runs(runs.get("g2", {}), ["reward@1", "reward@2", "grad_norm", "kl"], page / "gamma2.png"):
        md += ["![gamma 2: rewards, gradient norm and KL per step](gamma2.png)", ""]
    md += ["## Three turns, gamma = 0.5", ""] + training_table("t3", runs.get("t3", {}), 3, out) + [""]
    if plot_runs(runs.get("t3", {}), ["reward@1", "reward@2", "reward@3", "kl"], page / "turns3.png"):
        md += ["![three turns: rewards per turn and KL per step](turns3.png)", ""]
    md += ["### Held-out: greedy, three turns, MBPP test", "",
           "acc@t in % ± one standard error over problems; Δ columns in % of problems.", ""]
    md += held_out_table(out) + [""]
    path = page / "credit_training.md"
    path.write_text("\n".join(md).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    return page_main(argv, "cocos.eval.report_credit", __doc__, "scripts/credit.sh", build)


if __name__ == "__main__":
    raise SystemExit(main())
