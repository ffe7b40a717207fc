"""The paper's four claims, checked on the run folders of scripts/claims.sh: OUT/claims.md + plots.

    build("runs/claims_cpu", seeds=[0, 1, 2], budget="cpu: 30 steps, 3 seeds")   # scripts/claims_report.py's work

Reads OUT/train/<run>_s<seed>/log.jsonl (runs g0, g0.5, g1, g2, binary, score) and
OUT/eval/<run>_s<seed>/<dataset>/metrics.json (+ samples.jsonl), computes each claim's numbers as mean ± standard
error over seeds, and a verdict per claim by the rule in RULE (cocos.eval.claims_stats; written on the page).
Missing runs are listed, not fatal.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from cocos.eval.claims_stats import RULE, Stat, claim_verdict, diff, mean_se, verdict
from cocos.eval.metrics import COPY_SIMILARITY  # a mean edit similarity at or above it: turn 2 copies turn 1
from cocos.eval.report import markdown_table
from cocos.eval.report_paper import pyplot, save_figure

# run name -> label; g0.5 is CoCoS as the paper runs it (progressive reward, gamma 0.5): the "progressive" and the
# "CoCoS" arm of claims 2-4 is that same run
RUNS = {
    "g0": "CoCoS γ=0", "g0.5": "CoCoS γ=0.5", "g1": "CoCoS γ=1", "g2": "CoCoS γ=2",
    "binary": "CoCoS binary reward", "score": "SCoRe",
}
GAMMAS = {"g0": 0.0, "g0.5": 0.5, "g1": 1.0, "g2": 2.0}
DATASETS = ("mbpp", "odex")


# ---- reading the runs ---------------------------------------------------------------------------
def read_log(path: Path) -> list[dict]:
    """cocos.eval.runs.read_log (it skips a partial last line; a step that trained no group has no KL), [] for a file
    not written yet."""
    from cocos.eval.runs import read_log as read

    return read(path) if path.exists() else []


def seed_folders(parent: Path, name: str, seeds: list[int] | None):
    """(seed, folder) for each folder parent/<name>_s<seed> present, within `seeds` (None: all)."""
    for folder in sorted(parent.glob(f"{name}_s*")) if parent.is_dir() else []:
        try:
            seed = int(folder.name[len(name) + 2:])
        except ValueError:
            continue
        if seeds is None or seed in seeds:
            yield seed, folder


def load(out: Path, seeds: list[int] | None, partial: dict | None = None) -> dict:
    """{run: {seed: {"log": [...], "evals": {dataset: metrics}}}} for the folders present (unfinished runs go to
    `partial`, when given, as {run: {seed: steps logged}})."""
    from cocos.eval.report_paper import nothing_to_preserve
    from cocos.eval.runs import read_run

    found: dict = {name: {} for name in RUNS}
    for name in RUNS:
        for seed, folder in seed_folders(out / "train", name, seeds):
            log = read_log(folder / "log.jsonl")
            for row in log:
                # the turn-2 gain of each step: what a hacked turn 1 would leave for turn 2 to win
                if isinstance(row.get("reward@1"), (int, float)) and isinstance(row.get("reward@2"), (int, float)):
                    row["gain@2"] = row["reward@2"] - row["reward@1"]
                # turn 1's KL per generated token: a longer answer sums more tokens' KL without moving further
                if isinstance(row.get("kl@1"), (int, float)) and (row.get("length@1") or 0) > 0:
                    row["kl@1/token"] = row["kl@1"] / row["length@1"]
            found[name][seed] = {"log": log, "evals": {}}
        for seed, folder in seed_folders(out / "eval", name, seeds):
            for ds_dir in folder.iterdir():
                mpath = ds_dir / "metrics.json"
                if mpath.exists():
                    run = read_run(ds_dir)
                    m = dict(run.metrics)
                    # no test passed at turn 1: the metric's 1.0 is a convention, not a measurement, and would pull
                    # a seed's mean toward 1; such a seed counts as missing (the report's n/a, same rule)
                    m["unit_preserve_measured"] = None if nothing_to_preserve(run, 1, 2) else m.get("unit_preserve(1,2)")
                    found[name].setdefault(seed, {"log": [], "evals": {}})["evals"][ds_dir.name] = m
    # every run has one budget: a run that logged fewer steps than the longest is still going (or stopped at
    # max_minutes); its first and last quarters would not be comparable, so it is listed, not counted
    longest = max((len(r["log"]) for runs in found.values() for r in runs.values()), default=0)
    for name, runs in found.items():
        for seed in [s for s, r in runs.items() if 0 < len(r["log"]) < longest]:
            steps = len(runs.pop(seed)["log"])
            if partial is not None:
                partial.setdefault(name, {})[seed] = steps
    return found


def window(log: list[dict]) -> int:
    return max(1, len(log) // 4)


def first_last(log: list[dict], key: str) -> tuple[float | None, float | None]:
    vals = [r[key] for r in log if isinstance(r.get(key), (int, float))]
    if len(vals) < 2:
        return None, None
    w = max(1, len(vals) // 4)
    return sum(vals[:w]) / w, sum(vals[-w:]) / w


def per_seed(runs: dict, name: str, fn) -> list:
    return [fn(r) for _, r in sorted(runs.get(name, {}).items())]


def log_change(key: str):
    def fn(r):
        a, b = first_last(r["log"], key)
        return None if a is None else b - a
    return fn


def log_end(key: str):
    def fn(r):
        return first_last(r["log"], key)[1]
    return fn


def log_start(key: str):
    def fn(r):
        return first_last(r["log"], key)[0]
    return fn


def eval_key(ds: str, key: str):
    def fn(r):
        v = r["evals"].get(ds, {}).get(key)
        return v if isinstance(v, (int, float)) else None
    return fn


def net_correction(ds: str):
    def fn(r):
        m = r["evals"].get(ds)
        if not m or m.get("delta_i2c(1,2)") is None:
            return None
        return m["delta_i2c(1,2)"] - m["delta_c2i(1,2)"]
    return fn


def stat(runs, name, fn) -> Stat:
    return mean_se(per_seed(runs, name, fn))


def by_seed(runs, name, fn) -> dict[int, float]:
    """{seed: fn(run)} for the seeds of `name` where fn gives a value (a test pairs arms by these seeds)."""
    vals = {seed: fn(r) for seed, r in runs.get(name, {}).items()}
    return {seed: v for seed, v in vals.items() if v is not None}


def test(what: str, a: dict[int, float], b: dict[int, float] | None, direction: int, undefined: str = "") -> dict:
    d = diff(a, b)
    v, why, need = verdict(d, direction, undefined)
    return {"what": what, "d": d, "direction": direction, "verdict": v, "why": why, "need": need}


# ---- the claims ---------------------------------------------------------------------------------
def compute(runs: dict) -> dict:
    c = {}
    # 1: gamma 0 invites reward hacking: r1 falls under gamma 0 and holds under 0.5
    dr1 = {g: by_seed(runs, g, log_change("reward@1")) for g in GAMMAS}
    rows = []
    for g in GAMMAS:
        rows.append([RUNS[g], stat(runs, g, log_start("reward@1")), stat(runs, g, log_end("reward@1")),
                     stat(runs, g, log_change("reward@1")),
                     stat(runs, g, log_end("reward@2")), stat(runs, g, log_change("reward@2")),
                     stat(runs, g, log_end("gain@2")), stat(runs, g, log_end("edit_sim(1,2)"))])
    gain = {g: by_seed(runs, g, log_end("gain@2")) for g in ("g0", "g0.5")}
    c[1] = {"tests": [test("turn-1 reward change under γ=0 (last quarter of steps − first quarter) < 0", dr1["g0"], None, -1),
                      test("that change under γ=0 − under γ=0.5 < 0", dr1["g0"], dr1["g0.5"], -1),
                      test("turn-2 gain r2 − r1 over the last quarter, γ=0 − γ=0.5 > 0", gain["g0"], gain["g0.5"], +1)],
            "header": ["run", "r1 first quarter", "r1 last quarter", "Δr1", "r2 last quarter", "Δr2",
                       "r2 − r1 last quarter", "edit sim turn 1 → 2, last quarter"], "rows": rows}
    # 2: progressive preserves passed test cases better than binary
    tests, rows = [], []
    for ds in DATASETS:
        p, b = (by_seed(runs, n, eval_key(ds, "unit_preserve_measured")) for n in ("g0.5", "binary"))
        tests.append(test(f"{ds}: unit preserve, progressive − binary > 0", p, b, +1,
                          undefined="no test passed at turn 1 in any seed (unit preserve is then undefined: more "
                                    "evaluation problems or a stronger model)"))
        for n in ("g0.5", "binary"):
            lost = mean_se([None if v is None else 1 - v for v in per_seed(runs, n, eval_key(ds, "unit_preserve_measured"))])
            rows.append([f"{RUNS[n]} ({'progressive' if n == 'g0.5' else 'binary'})", ds,
                         stat(runs, n, eval_key(ds, "unit_preserve_measured")), lost,
                         stat(runs, n, eval_key(ds, "unit_improve(1,2)")), stat(runs, n, eval_key(ds, "unit_worsen(1,2)")),
                         stat(runs, n, eval_key(ds, "acc@1")), stat(runs, n, eval_key(ds, "acc@2"))])
    c[2] = {"tests": tests, "rows": rows, "pct": True,
            "header": ["run", "dataset", "unit preserve", "passed tests lost", "unit improve", "unit worsen", "acc@1", "acc@2"]}
    # 3: SCoRe's turn-1 KL explodes on small models and its reward collapses
    kl1 = {n: by_seed(runs, n, log_end("kl@1")) for n in ("score", "g0.5")}
    drew = by_seed(runs, "score", log_change("reward_mean"))
    rows = [[RUNS[n], stat(runs, n, log_start("kl@1")), stat(runs, n, log_end("kl@1")),
             stat(runs, n, log_end("kl@1/token")), stat(runs, n, log_end("length@1")), stat(runs, n, log_end("kl@2")),
             stat(runs, n, log_start("reward_mean")), stat(runs, n, log_end("reward_mean")),
             stat(runs, n, log_change("reward_mean"))] for n in ("score", "g0.5", "binary")]
    c[3] = {"tests": [test("turn-1 KL over the last quarter of steps, SCoRe − CoCoS > 0", kl1["score"], kl1["g0.5"], +1),
                      test("SCoRe's mean reward change (last quarter − first quarter) < 0", drew, None, -1)],
            "header": ["run", "kl@1 first quarter", "kl@1 last quarter", "kl@1 per token, last quarter",
                       "turn-1 tokens, last quarter", "kl@2 last quarter", "reward first quarter",
                       "reward last quarter", "reward change"], "rows": rows}
    # 4: CoCoS corrects selectively: low Δc→i with a higher Δi→c
    tests, rows = [], []
    for ds in DATASETS:
        tests.append(test(f"{ds}: CoCoS Δi→c − Δc→i > 0", by_seed(runs, "g0.5", net_correction(ds)), None, +1))
        tests.append(test(f"{ds}: Δc→i, CoCoS − SCoRe < 0", by_seed(runs, "g0.5", eval_key(ds, "delta_c2i(1,2)")),
                          by_seed(runs, "score", eval_key(ds, "delta_c2i(1,2)")), -1))
        for n in ("g0.5", "score", "binary"):
            rows.append([RUNS[n], ds, stat(runs, n, eval_key(ds, "delta_i2c(1,2)")),
                         stat(runs, n, eval_key(ds, "delta_c2i(1,2)")), stat(runs, n, eval_key(ds, "delta(1,2)")),
                         stat(runs, n, eval_key(ds, "acc@2")), stat(runs, n, eval_key(ds, "edit_sim(1,2)"))])
    # edit sim: how much of turn 1's code turn 2 keeps (100 = a copy, no correction attempted)
    c[4] = {"tests": tests, "rows": rows, "pct": True,
            "header": ["run", "dataset", "Δi→c", "Δc→i", "Δ", "acc@2", "edit sim turn 1 → 2"]}
    for v in c.values():
        v["verdict"] = claim_verdict(v["tests"])
    copied = copying(runs)
    if copied:  # claims 2 and 4 measure what turn 2 changes: with turn 1 copied, seeds alone cannot move them
        for i in (2, 4):
            c[i]["copying"] = copied
    return c




def copying(runs: dict) -> str:
    """When every evaluated run's turn 2 copies its turn 1 on every dataset (edit similarity >= COPY_SIMILARITY),
    a sentence that says so with the range; else ''."""
    sims = [v for n in ("g0.5", "binary", "score") for ds in DATASETS for v in per_seed(runs, n, eval_key(ds, "edit_sim(1,2)"))
            if v is not None]
    if not sims or min(sims) < COPY_SIMILARITY:
        return ""
    return (f"Every evaluated model copies its turn-1 code at turn 2 (edit similarity {100 * min(sims):.1f}-"
            f"{100 * max(sims):.1f}% over {len(sims)} evaluations), so the held-out corrections and preservation "
            "barely move whatever the reward: a model that rewrites at turn 2 (longer training, a larger model) is "
            "needed before more seeds.")


# ---- plots --------------------------------------------------------------------------------------
def curve(runs: dict, name: str, key: str):
    """steps, means, SEs (None where < 2 seeds) of a log key over seeds."""
    by_step: dict[int, list[float]] = {}
    for r in runs.get(name, {}).values():
        for row in r["log"]:
            if isinstance(row.get(key), (int, float)):
                by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(by_step)
    stats = [mean_se(by_step[s]) for s in steps]
    return steps, [s.mean for s in stats], [s.se for s in stats]


def paired_steps(runs: dict, a: str, b: str, key: str, as_key: str) -> dict:
    """A run-like {seed: {"log": [{step, as_key: a's key - b's key}]}} over the seeds and steps both runs logged:
    with one seed both see the same problems at each step, so the difference leaves out the problems' difficulty."""
    out = {}
    for seed in set(runs.get(a, {})) & set(runs.get(b, {})):
        rb = {r["step"]: r.get(key) for r in runs[b][seed]["log"]}
        rows = [{"step": r["step"], as_key: r[key] - rb[r["step"]]} for r in runs[a][seed]["log"]
                if isinstance(r.get(key), (int, float)) and isinstance(rb.get(r["step"]), (int, float))]
        if rows:
            out[seed] = {"log": rows, "evals": {}}
    return out


def plot_curves(runs: dict, names: list[str], keys: list[tuple[str, str]], path: Path, title: str) -> bool:
    plt = pyplot()
    cols = 2 if len(keys) == 4 else len(keys)  # four panels as 2 x 2: a row of four is too small to read
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    drawn = False
    for ax, (key, ylabel) in zip(axes.flat, keys):
        if "−" in key:  # a difference: 0 is "no difference"
            ax.axhline(0, color="black", lw=0.6)
        for name in names:
            steps, m, se = curve(runs, name, key)
            if not steps:
                continue
            drawn = True
            line, = ax.plot(steps, m, marker="o", ms=3, label=f"{RUNS.get(name, name)} (n={len(runs[name])})")
            if all(s is not None for s in se):
                ax.fill_between(steps, [a - b for a, b in zip(m, se)], [a + b for a, b in zip(m, se)],
                                color=line.get_color(), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if drawn:
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title + " (mean over seeds, band ± 1 SE)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_bars(rows: list[list], label_cols: int, metric_names: list[str], path: Path, title: str) -> bool:
    """One group per metric, one bar per row (its label columns joined), mean ± SE as error bar."""
    plt = pyplot()
    rows = [r for r in rows if any(isinstance(s, Stat) and s.mean is not None for s in r[label_cols:])]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metric_names) * len(rows) / 2), 3.8))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        stats = r[label_cols:label_cols + len(metric_names)]
        xs = [j + i * width for j in range(len(metric_names))]
        ax.bar(xs, [math.nan if s.mean is None else 100 * s.mean for s in stats], width,  # no value: no bar
               yerr=[100 * (s.se or 0) for s in stats], capsize=3, label=" / ".join(str(x) for x in r[:label_cols]))
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(metric_names))])
    ax.set_xticklabels(metric_names)
    ax.set_ylabel("% (mean over seeds ± 1 SE)")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=110)
    return True


# ---- the page -----------------------------------------------------------------------------------
CLAIMS = {
    1: ("γ = 0 invites reward hacking: turn 1 gets worse on purpose so that turn 2 can improve on it",
        "Training-set curves on the curriculum-kept MBPP-train problems: reward@1 and reward@2 per step for γ in "
        "{0, 0.5, 1, 2}. Hacking shows as r1 falling under γ=0 while it holds under γ=0.5, and as a larger turn-2 gain "
        "r2 − r1 under γ=0: turn 1 left worse so that turn 2 can win the difference. Runs with the same seed see the "
        "same problems in the same order at every γ, so the γ=0 − γ=0.5 tests are paired by seed. The last column, "
        "the edit similarity of the two turns' sampled code in training, says how much turn 2 changes at all: "
        "R = γ r1 + r2 − r1 (T = 2), so under γ=0 a trajectory whose turn 2 repeats turn 1 earns 0, whatever r1."),
    2: ("A progressive reward preserves previously passed test cases far better than a binary one (paper: about 40% "
        "of them lost with binary on ODEX)",
        "Held-out, greedy, 2 turns: unit preserve = test cases passed at turn 1 and at turn 2 / passed at turn 1, "
        "pooled over problems (DESIGN.md), with a seed counted as missing when "
        "no test passed at turn 1 (the metric's 1.0 for that case is a convention, not a measurement)."),
    3: ("SCoRe's turn-1 KL explodes on small models, and its reward collapses",
        "Per-turn KL to the reference (kl@1, kl@2, per trajectory) and the mean training reward per step, SCoRe vs "
        "CoCoS (γ=0.5); the binary-reward run is shown beside them (the per-turn KL of progressive vs binary, which "
        "the tests do not use; its reward is 0/1 per turn, so its reward columns are on another scale). SCoRe's "
        "stage I puts a strong KL on turn 1, stage II a shaped bonus. The KL is the "
        "trainer's k1 estimate (log π − log π_ref summed over a turn's tokens): unbiased, but a step's value can "
        "fall slightly below 0."),
    4: ("CoCoS corrects selectively: a low Δc→i with a higher Δi→c",
        "Held-out Δi→c (wrong at turn 1, right at turn 2) and Δc→i (right, then wrong), shares of problems, CoCoS "
        "(γ=0.5) against SCoRe and the binary-reward run. The edit similarity of the two turns' code says whether "
        "turn 2 tried to correct at all (100 = turn 1 copied)."),
}


def _cell(x, pct: bool) -> str:
    return x.fmt(pct=pct) if isinstance(x, Stat) else str(x)


def build(out: str | Path, seeds: list[int] | None = None, budget: str = "", page: str = "claims.md",
          publish: str | Path | None = None) -> dict:
    """Write OUT/claims.md and its plots; with `publish`, copy them there, and the numbers behind them to
    publish/runs (copy_numbers), from which this script redraws the same page."""
    out = Path(out)
    partial: dict[str, dict[int, int]] = {}  # run -> {seed: steps logged} of the unfinished runs set aside
    runs = load(out, seeds, partial)
    claims = compute(runs)
    plots = {
        1: plot_curves({**runs, "paired": paired_steps(runs, "g0", "g0.5", "reward@1", "r1 γ0−γ0.5")},
                       list(GAMMAS) + ["paired"],
                       [("reward@1", "turn-1 reward"), ("reward@2", "turn-2 reward"), ("gain@2", "turn-2 gain r2 − r1"),
                        ("r1 γ0−γ0.5", "turn-1 reward, γ=0 − γ=0.5\n(same seed: same problems per step)")],
                       out / "claim1_rewards.png", "training reward per step by γ"),
        2: plot_bars([r[:2] + r[2:6] for r in claims[2]["rows"]], 2,
                     ["unit preserve", "passed tests lost", "unit improve", "unit worsen"], out / "claim2_unit.png",
                     "progressive vs binary reward, held-out unit-level metrics"),
        3: plot_curves(runs, ["score", "g0.5", "binary"], [("kl@1", "KL turn 1"), ("kl@2", "KL turn 2"),
                                                           ("reward_mean", "mean reward")], out / "claim3_kl.png",
                       "SCoRe vs CoCoS (and binary reward): per-turn KL and reward per step"),
        4: plot_bars([r[:2] + r[2:4] for r in claims[4]["rows"]], 2, ["Δi→c", "Δc→i"], out / "claim4_deltas.png",
                     "held-out corrections, turn 1 → turn 2"),
    }
    files = {1: "claim1_rewards.png", 2: "claim2_unit.png", 3: "claim3_kl.png", 4: "claim4_deltas.png"}
    md = ["# The paper's claims, checked on the default model", ""]
    md += [f"Budget: {budget or 'not stated'}. Folder: `{out}`.", ""]
    if publish:
        md += [f"The numbers behind this page (each run's training log and config, each evaluation's metrics and "
               f"config; no checkpoints or samples) are in `runs/` beside it: `python scripts/claims_report.py "
               f"{Path(publish) / 'runs'}` redraws the page from them.", ""]
    md += ["Runs found (seeds; steps logged per seed):", ""]
    for name, label in RUNS.items():
        got = {s: r for s, r in runs.get(name, {}).items() if r["log"] or r["evals"]}  # a folder with no step: not yet
        if got:
            desc = ", ".join(f"s{s}: {len(r['log'])} steps, evals {'/'.join(sorted(r['evals'])) or 'none'}"
                             for s, r in sorted(got.items()))
        else:
            desc = "missing"
        going = ", ".join(f"s{s} at step {n}" for s, n in sorted(partial.get(name, {}).items()))
        md.append(f"- {label} (`{name}`): n = {len(got)} — {desc}" + (f" (not counted, unfinished: {going})" if going else ""))
    md += ["", "## Verdict rule", "", RULE, "",
           "Per-run numbers: a training curve's start and end are the means over its first and last quarter of "
           "steps (at least one step each); held-out numbers come from one greedy evaluation per seed.", "",
           "| claim | verdict |", "|---|---|"]
    md += [f"| {i}. {CLAIMS[i][0]} | **{claims[i]['verdict']}** |" for i in CLAIMS]
    for i, (title, how) in CLAIMS.items():
        c = claims[i]
        md += ["", f"## Claim {i}: {title}", "", how, ""]
        md += [f"![claim {i}]({files[i]})" if plots[i] else "(no plot: no data)", ""]
        cells = [[_cell(x, c.get("pct", False)) for x in r] for r in c["rows"]]
        md += markdown_table(c["header"], cells, numeric=False)
        md += ["", "Tests:", ""]
        md += [f"- {t['what']}: d = {_cell(t['d'], False)} → **{t['verdict']}** ({t['why']})" for t in c["tests"]]
        md += ["", f"**Verdict: {c['verdict']}.**"]
        if c["verdict"].startswith("not measurable"):
            md += [""] + needed(c)
    md.append("")
    (out / page).write_text("\n".join(md))
    if publish:
        publish = Path(publish)
        publish.mkdir(parents=True, exist_ok=True)
        for f in [page, *(files[i] for i in plots if plots[i])]:
            shutil.copy2(out / f, publish / f)
        copy_numbers(out, publish / "runs", seeds)
    return {"runs": runs, "claims": claims, "page": out / page}


def copy_numbers(out: Path, dest: Path, seeds: list[int] | None = None) -> None:
    """Copy what the page is computed from into dest, in the same layout: each run's log.jsonl and config.yaml, each
    evaluation's metrics.json and config.json (a few hundred kB, where the checkpoints and samples are GBs)."""
    for name in RUNS:
        for sub, patterns in (("train", ("log.jsonl", "config.yaml")), ("eval", ("*/metrics.json", "*/config.json"))):
            for _, folder in seed_folders(out / sub, name, seeds):
                for pattern in patterns:
                    for f in folder.glob(pattern):
                        target = dest / f.relative_to(out)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, target)


def needed(c: dict) -> list[str]:
    """What would make an undecided claim measurable: the copying (when seen) first, then each undecided test's need."""
    items = [c["copying"]] if c.get("copying") else []
    items += [f"{t['what']}: {t['need']}." for t in c["tests"] if t["verdict"] == "not measurable"]
    return ["What would be needed:", ""] + [f"- {x}" for x in items]
