"""The self-correction page: does a model rewrite at turn 2, and does the rewrite correct? (scripts/self_correction.sh)

    python -m cocos.eval.report_correction OUT [--out PAGE_DIR] [--budget TEXT]

OUT is the script's folder: boost_*/sft_stats.json (what each boost model learned from), curriculum/rule_signal.json,
train/<arm>_s<seed>/log.jsonl (the correction monitors) and eval/step_N (its greedy checks on MBPP validation, beside
eval_validation/<model>, the start's), eval/<model>/<dataset>/metrics.json (held-out, greedy). The
page: the held-out table per dataset with standard errors, the goal check on MBPP (delta_i2c - delta_c2i >= 2
points, acc@1 not below the new boost's), the boost data, the curriculum rules, and each arm's monitors with a plot.
"""

from __future__ import annotations

import json
from pathlib import Path

from cocos.eval import runs
from cocos.eval.claims_stats import mean_se
from cocos.eval.report import markdown_table, page_main, pct

DATASETS = ("mbpp", "humaneval", "odex")
# (column, metric key, shown as a share with its standard error when there is one)
COLUMNS = [("acc@1", "acc@1"), ("acc@2", "acc@2"), ("Δi→c", "delta_i2c(1,2)"), ("Δc→i", "delta_c2i(1,2)"),
           ("Δ (i→c − c→i)", "delta(1,2)"), ("i→c hard-coded", "delta_i2c_hardcoded(1,2)"),
           ("unit improve", "unit_improve(1,2)"), ("unit worsen", "unit_worsen(1,2)"),
           ("unit preserve", "unit_preserve(1,2)"), ("edit sim, t1 wrong", "edit_sim_if_wrong(1,2)"),
           ("edit sim, t1 right", "edit_sim_if_right(1,2)"), ("copies of wrong t1", "copy_if_wrong(1,2)"),
           ("keeps right over wrong (AUROC)", "keep_selectivity(1,2)"),
           ("confidence tells right from wrong t1 (AUROC)", "confidence_auroc@1"),
           ("echo a shown test t1", "hardcoded@1"), ("echo a shown test t2", "hardcoded@2")]
MONITORS = ("reward@1", "reward@2", "copy_if_wrong", "delta_i2c", "delta_c2i", "edit_sim_if_wrong", "keep_selectivity",
            "confidence_auroc", "turn2_signal", "hardcoded@2")
AUROCS = {"keep_selectivity(1,2)", "confidence_auroc@1"}  # shown as they are (0.5: no separation), not as shares
GOAL_POINTS = 0.02


def cell(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a" if key in metrics else "-"
    se = metrics.get(f"se:{key}")
    if key in AUROCS:
        return f"{value:.2f}" + (f" ± {se:.2f}" if se else "")
    return pct(value) + (f" ± {100 * se:.1f}" if se else "")


def models_of(out: Path, folder: str = "eval") -> list[str]:
    """The evaluated models (OUT/<folder>/<model>): the boosts first, then the arms in name order."""
    names = sorted(p.name for p in (out / folder).iterdir() if p.is_dir()) if (out / folder).is_dir() else []
    return sorted(names, key=lambda n: (not n.startswith("boost_"), n != "boost_old", n))


def held_out(out: Path, folder: str = "eval") -> list[str]:
    """A table per dataset of OUT/<folder>/<model>/<dataset>/metrics.json: eval (greedy) or sampled (temperature)."""
    md = []
    for ds in DATASETS:
        rows = []
        for name in models_of(out, folder):
            path = out / folder / name / ds / runs.METRICS
            if path.exists():
                m = json.loads(path.read_text())
                rows.append([name, str(m.get("n_problems", "?"))] + [cell(m, key) for _, key in COLUMNS])
        if rows:
            md += [f"### {ds}", ""] + markdown_table(["model", "problems"] + [c for c, _ in COLUMNS], rows) + [""]
    return md


def goal(out: Path) -> list[str]:
    """The goal on MBPP test: delta_i2c - delta_c2i >= 2 points (its standard error is delta(1,2)'s: per problem,
    i2c - c2i is the change in correctness) with acc@1 not below the new boost's."""
    path = lambda name: out / "eval" / name / "mbpp" / runs.METRICS  # noqa: E731
    if not path("boost_new").exists():
        return ["The new boost model has no MBPP evaluation yet: no goal check.", ""]
    base = json.loads(path("boost_new").read_text())
    if not {"acc@1", "delta(1,2)"} <= set(base):
        return [f"{path('boost_new')} has no acc@1 / delta(1,2) (not a 2-turn evaluation): no goal check.", ""]
    md = ["| model | Δi→c − Δc→i | SE | within 2 SE of 0? | acc@1 vs the new boost | goal met |", "|---|---:|---:|---|---|---|"]
    for name in models_of(out):
        if not path(name).exists():
            continue
        m = json.loads(path(name).read_text())
        if not {"acc@1", "delta(1,2)"} <= set(m):
            continue
        d, se = m["delta(1,2)"], m.get("se:delta(1,2)", 0.0)
        acc_ok = m["acc@1"] >= base["acc@1"] - 1e-12
        met = d >= GOAL_POINTS and acc_ok
        md.append(f"| {name} | {100 * d:+.1f} | {100 * se:.1f} | {'yes' if abs(d) <= 2 * se else 'no'} | "
                  f"{100 * (m['acc@1'] - base['acc@1']):+.1f} | {'**yes**' if met else 'no'} |")
    return md + [""]


def plot_interventions(out: Path, path: Path, dataset: str = "mbpp") -> bool:
    """What each model's training did on held-out problems (greedy): left, how often turn 2 copies a wrong turn 1
    against the net correction Δi→c − Δc→i (± 1 SE) with the goal's line; right, Δi→c against Δc→i (above the
    diagonal: more fixes than breaks)."""
    from cocos.eval.report_paper import pyplot

    points = []
    for name in models_of(out):
        f = out / "eval" / name / dataset / runs.METRICS
        m = json.loads(f.read_text()) if f.exists() else {}
        if all(m.get(k) is not None for k in ("copy_if_wrong(1,2)", "delta(1,2)", "delta_i2c(1,2)", "delta_c2i(1,2)")):
            points.append((name, m))
    if not points:
        return False
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = plt.get_cmap("tab10").colors  # one colour per model in both panels; the legend names them
    for i, (name, m) in enumerate(points):
        style = dict(color=colors[i % 10], marker="os^D"[i // 10 % 4])
        left.errorbar(100 * m["copy_if_wrong(1,2)"], 100 * m["delta(1,2)"], yerr=100 * (m.get("se:delta(1,2)") or 0.0),
                      capsize=3, label=name, **style)
        right.plot(100 * m["delta_c2i(1,2)"], 100 * m["delta_i2c(1,2)"], ls="", **style)
    left.axhline(100 * GOAL_POINTS, color="green", ls="--", lw=1, label="the goal: +2 points")
    left.axhline(0, color="grey", lw=0.8)
    left.set_xlabel("turn 2 copies a wrong turn 1 (%)")
    left.set_ylabel("Δi→c − Δc→i (points, ± 1 SE)")
    fig.legend(*left.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    top = max(1.0, *(100 * max(m["delta_i2c(1,2)"], m["delta_c2i(1,2)"]) for _, m in points)) * 1.15
    right.plot([0, top], [0, top], color="grey", lw=0.8)
    right.set_xlim(-0.1 * top, top)
    right.set_ylim(-0.1 * top, top)
    right.set_xlabel("Δc→i (% of problems broken)")
    right.set_ylabel("Δi→c (% of problems fixed)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset} test, greedy, 2 turns: what each model's training did to turn 2", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
    return True


def solved(samples_path: Path) -> dict:
    """task id -> how many of its samples' first turns pass every test."""
    counts: dict = {}
    for r in runs.read_jsonl(samples_path):
        first = r["turns"][0]
        counts[r["task_id"]] = counts.get(r["task_id"], 0) + (first["passed"] == first["total"])
    return counts


def reachable(out: Path) -> list[str]:
    """Is correction within the model's reach? The new boost's pass@k at temperature 0.9 (reachable/boost_new_mbpp,
    k samples of turn 1 per problem) against its greedy acc@1, and how many greedy-wrong problems some sample solves:
    the most a turn 2 that samples like turn 1 could fix. headroom.json keeps that count where the samples are not
    published."""
    folder, greedy = out / "reachable" / "boost_new_mbpp", out / "eval" / "boost_new" / "mbpp"
    if not (folder / runs.METRICS).exists() or not (greedy / runs.METRICS).exists():
        return []
    m, g = json.loads((folder / runs.METRICS).read_text()), json.loads((greedy / runs.METRICS).read_text())
    keys = sorted((k for k in m if k.startswith("pass@") and k.endswith("@turn1")), key=lambda k: int(k.split("@")[1]))
    headroom = folder / "headroom.json"
    if (folder / runs.SAMPLES).exists() and (greedy / runs.SAMPLES).exists():
        sampled, right = solved(folder / runs.SAMPLES), solved(greedy / runs.SAMPLES)
        wrong = [t for t, c in right.items() if not c]
        headroom.write_text(json.dumps({"greedy_wrong": len(wrong), "greedy_wrong_solved_by_a_sample":
                                        sum(sampled.get(t, 0) > 0 for t in wrong), "problems": len(right)}, indent=1))
    md = [f"The new boost, {m.get('n_samples', '?')} samples of turn 1 at temperature 0.9 over "
          f"{m.get('n_problems', '?')} MBPP-test problems, against its greedy acc@1 {cell(g, 'acc@1')}:", "",
          *markdown_table([k.removesuffix("@turn1") for k in keys], [[pct(m[k]) for k in keys]]), ""]
    h = json.loads(headroom.read_text()) if headroom.exists() else {}
    if h.get("problems"):
        md += [f"{h['greedy_wrong_solved_by_a_sample']} of the {h['greedy_wrong']} problems that greedy turn 1 gets "
               f"wrong are solved by at least one sample ({pct(h['greedy_wrong_solved_by_a_sample'] / h['problems'])}% "
               "of all problems): the headroom a turn 2 has at this size.", ""]
    return md


def boost_data(out: Path) -> list[str]:
    rows = []
    for name in ("boost_old", "boost_new"):
        path = out / name / "sft_stats.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        origin = ", ".join(f"{k.removeprefix('turn2_')} {s[k]}" for k in s if k.startswith(("turn2_fix_", "turn2_keep_")))
        sim = s.get("fix_similarity_mean")
        rows.append([name, str(s.get("examples", "?")), json.dumps(s.get("problems_by_dataset", {})),
                     str(s.get("turn2_fix", "?")), str(s.get("turn2_keep", "?")), origin or "mutants / reference",
                     "-" if sim is None else f"{sim:.3f}"])
    if not rows:
        return []
    return markdown_table(["boost", "examples", "problems", "turn-2 fix", "turn-2 keep", "previous answer from",
                           "fix: similarity of shown code to target"], rows, numeric=False) + [""]


def curriculum(out: Path) -> list[str]:
    """Each rule's kept problems and turn-2 signal, under the progressive reward (curriculum/) and, where the script
    scored the same samples so, the binary reward (curriculum_binary/)."""
    rows = []
    for folder, reward in (("curriculum", "progressive"), ("curriculum_binary", "binary")):
        path = out / folder / "rule_signal.json"
        if path.exists():
            rows += [[rule, reward, str(v["kept"]), pct(v["turn1_signal"]), pct(v["turn2_signal"]),
                      pct(v["turn2_improves"])] for rule, v in json.loads(path.read_text()).items()]
    if not rows:
        return []
    return markdown_table(["rule", "reward", "problems kept", "turn-1 rewards differ", "turn-2 rewards differ",
                           "samples whose turn 2 beats turn 1"], rows) + [""]


def arms(out: Path, page: Path) -> list[str]:
    folders = sorted(p for p in (out / "train").iterdir() if (p / runs.LOG).exists()) if (out / "train").is_dir() else []
    if not folders:
        return []
    logs = {p.name: runs.read_log(p / runs.LOG) for p in folders}
    rows = []
    for name, log in logs.items():
        q = max(1, len(log) // 4)

        def window(recs, key):
            xs = [r[key] for r in recs if r.get(key) is not None]
            return f"{sum(xs) / len(xs):.3f}" if xs else "n/a"

        rows.append([name, str(len(log))] + [f"{window(log[:q], k)} → {window(log[-q:], k)}" for k in MONITORS])
    md = ["Each cell: the mean over the first quarter of the steps → the last quarter.", ""]
    md += markdown_table(["arm", "steps"] + list(MONITORS), rows) + [""]
    md += matched_windows(logs)
    if plot_monitors(logs, page / "monitors.png"):
        md += ["![correction monitors](monitors.png)", ""]
    return md


CHECK_COLUMNS = [("acc@1", "acc@1"), ("acc@2", "acc@2"), ("Δ (i→c − c→i)", "delta(1,2)"),
                 ("copies of wrong t1", "copy_if_wrong(1,2)"), ("edit sim, t1 wrong", "edit_sim_if_wrong(1,2)"),
                 ("keeps right over wrong (AUROC)", "keep_selectivity(1,2)"), ("echo a shown test t2", "hardcoded@2"),
                 ("tests passed t1", "tests_passed@1")]


def validation_checks(out: Path) -> list[str]:
    """The greedy held-out checks an arm ran during training (train/<arm>/eval/step_N, the trainer's eval_every on
    MBPP validation) beside the same check of the models it started from (eval_validation/<model>): whether the
    arm moves away from its start on problems it never trains on, before its final evaluation."""
    rows = []
    for folder in sorted((out / "eval_validation").iterdir()) if (out / "eval_validation").is_dir() else []:
        if (folder / runs.METRICS).exists():
            m = json.loads((folder / runs.METRICS).read_text())
            rows.append([f"{folder.name} (start)", "-", str(m.get("n_problems", "?"))]
                        + [cell(m, k) for _, k in CHECK_COLUMNS])
    for arm in sorted(p for p in (out / "train").iterdir() if p.is_dir()) if (out / "train").is_dir() else []:
        for step in runs.eval_steps(arm):  # finished checks only, in step order
            m = json.loads((runs.eval_dir(arm, step) / runs.METRICS).read_text())
            rows.append([arm.name, str(step), str(m.get("n_problems", "?"))] + [cell(m, k) for _, k in CHECK_COLUMNS])
    if not any(r[1] != "-" for r in rows):
        return []
    return (["Greedy, 2 turns, on MBPP validation (problems no arm trains on), ± SE over problems: the arm's checks "
             "during training beside its start. On 90 problems one problem is 1.1 points.", ""]
            + markdown_table(["model", "step", "problems"] + [c for c, _ in CHECK_COLUMNS], rows) + [""])


def matched_windows(logs: dict[str, list[dict]], width: int = 50,
                    keys: tuple[str, ...] = ("copy_if_wrong", "edit_sim_if_wrong", "delta_i2c", "delta_c2i")) -> list[str]:
    """The monitors over the same steps for every arm (steps 1-50, 51-100, ...): arms of different lengths compare
    where they overlap. Each cell: the mean of the per-step values ± its standard error over the steps."""
    last = max((r["step"] for log in logs.values() for r in log), default=0)
    windows = [(a, min(a + width - 1, last)) for a in range(1, last + 1, width)]
    if len(logs) < 2 or not windows:
        return []
    md = [f"The same monitors over the same steps ({width}-step windows), mean ± SE over the window's steps (a count "
          "where an arm has fewer steps in the window):", ""]
    for key in keys:
        rows = []
        for name, log in logs.items():
            cells = []
            for a, b in windows:
                stat = mean_se(r.get(key) for r in log if a <= r["step"] <= b)
                if stat.se is None:  # fewer than 2 steps
                    cells.append("-")
                    continue
                short = "" if stat.n == b - a + 1 else f" ({stat.n} steps)"  # a shorter arm: fewer steps here
                cells.append(f"{stat.mean:.3f} ± {stat.se:.3f}{short}")
            rows.append([name] + cells)
        md += [f"**{key}**", ""] + markdown_table(["arm"] + [f"steps {a}-{b}" for a, b in windows], rows) + [""]
    return md


def plot_monitors(logs: dict[str, list[dict]], path: Path, smooth: int = 10) -> bool:
    from cocos.eval.report_paper import pyplot, save_figure

    keys = ("copy_if_wrong", "delta_i2c", "delta_c2i", "turn2_signal")
    if not any(r.get(k) is not None for log in logs.values() for r in log for k in keys):
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, log in logs.items():
            pts = [(r["step"], r[key]) for r in log if r.get(key) is not None]
            if pts:  # a running mean over `smooth` steps: one step holds 32 trajectories
                xs = [s for s, _ in pts]
                ys = [sum(v for _, v in pts[max(0, i - smooth + 1):i + 1]) / len(pts[max(0, i - smooth + 1):i + 1])
                      for i in range(len(pts))]
                ax.plot(xs, ys, label=name)
        ax.set_title(f"{key} ({smooth}-step mean)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path, dpi=110)
    return True


def build(out: Path, page: Path, budget: str = "") -> Path:
    page.mkdir(parents=True, exist_ok=True)
    md = ["# Self-correction you can see: a boost model that rewrites, and CoCoS from it", ""]
    if budget:
        md += [f"Budget: {budget}", ""]
    md += ["## Held-out evaluation (greedy, 2 turns, zero-shot)", "",
           "Shares in %, ± one standard error over problems. Δ (i→c − c→i) is acc@2 − acc@1. \"i→c hard-coded\" counts "
           "the fixes that return a value a test shown in the prompt expects (MBPP's prompt holds its tests). Edit "
           "similarity is split by whether turn 1 was right; \"copies\" are turn-2 codes at least 95% similar to a "
           "wrong turn 1.", ""]
    md += held_out(out)
    md += ["## The goal on MBPP test: Δi→c − Δc→i ≥ 2 points, acc@1 not below the new boost's", ""] + goal(out)
    if plot_interventions(out, page / "interventions.png"):
        md += ["![what each intervention did to copying and to correction](interventions.png)", ""]
    if models_of(out, "sampled"):
        md += ["## Held out at the sampling temperature (the training batches' decoding)", "",
               "The same problems, 2 turns, several samples per problem at temperature 0.9 (OUT/sampled): whether "
               "what the monitors show in training (on the curriculum's problems) holds on held-out problems when "
               "turn 2 is sampled as in training rather than decoded greedily. Standard errors over problems.", ""]
        md += held_out(out, "sampled")
    md += ["## Is correction within reach at 135M? pass@k against acc@1", ""] + reachable(out)
    md += ["## What each boost model learned from", ""] + boost_data(out)
    md += ["## Curriculum rules: how much turn-2 signal each selection leaves", "",
           "The new boost's 4 two-turn samples (temperature 0.9) of every MBPP-train problem.", ""] + curriculum(out)
    md += ["## Training monitors of each arm", ""] + arms(out, page)
    checks = validation_checks(out)
    if checks:
        md += ["## Held-out checks during training", ""] + checks
    path = page / "self_correction.md"
    path.write_text("\n".join(md).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    return page_main(argv, "cocos.eval.report_correction", __doc__, "scripts/self_correction.sh", build)


if __name__ == "__main__":
    raise SystemExit(main())
