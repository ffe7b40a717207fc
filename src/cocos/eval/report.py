"""Tables and plots from run folders: the paper's comparison, as Markdown and PNG.

    build_report(run_dirs, out_dir, labels=None, budget=None) -> Path   # out_dir/report.md (+ PNGs beside it)

A run folder is either
- an evaluation run: metrics.json (flat keys "acc@1", "delta(1,2)", ...), samples.jsonl, config.json;
- a training run: config.yaml, log.jsonl (one JSON object per step), eval/step_N/metrics.json,
  checkpoints/step_N. Its "final" numbers are those of its last evaluation.
Any mix works; whatever a folder lacks is skipped with a line in the report saying so. Folders given the same
label are one method: its evaluations on MBPP, HumanEval and ODEX make one row of the paper's table, with standard
errors (cocos.eval.report_paper), and a run of more than 2 turns adds it to the accuracy-by-turn figure. The detailed
sections (accuracy bars, delta and unit tables, response lengths) come once per dataset.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

from cocos.errors import UserError
from cocos.eval.report_paper import (acc_by_turn_section, dataset_key, dataset_order, dataset_title, n_turns,
                                     nothing_to_preserve, paper_tables, pyplot)
from cocos.eval.runs import Run, read_run

_PAIR_KEY = re.compile(r"^delta\((\d+),(\d+)\)$")
_ACC_KEY = re.compile(r"^acc@(\d+)$")


# ---- numbers ------------------------------------------------------------------------------------
def _num(x) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)) and math.isfinite(x):
        return float(x)
    return None


def pct(x) -> str:
    """A share in [0, 1] as a percentage with one decimal; '-' when missing."""
    v = _num(x)
    return "-" if v is None else f"{100 * v:.1f}"


def turns_of(metrics: dict) -> list[int]:
    return sorted(int(m.group(1)) for k in metrics if (m := _ACC_KEY.match(k)))


def turn_pairs(runs: list[Run]) -> list[tuple[int, int]]:
    """Every (t1, t2) pair some run has metrics for; (1, 2) first, as in the paper."""
    pairs = {(int(m.group(1)), int(m.group(2))) for r in runs for k in r.metrics if (m := _PAIR_KEY.match(k))}
    return sorted(pairs, key=lambda p: (p != (1, 2), p))


def per_turn_series(log: list[dict], stem: str) -> dict[int, list[tuple[int, float]]]:
    """{turn: [(step, value), ...]} for a per-turn quantity of a training log ("reward@1", "kl@2", ...)."""
    pat = re.compile(rf"^{re.escape(stem)}@(\d+)$")
    out: dict[int, list[tuple[int, float]]] = {}
    for rec in log:
        for k, x in rec.items():
            m = pat.match(k)
            if m and _num(x) is not None:
                out.setdefault(int(m.group(1)), []).append((rec["step"], float(x)))
    return out


def response_lengths(samples: list[dict]) -> dict[int, float]:
    """Mean response length per turn, in characters, from evaluation samples (cocos.eval.runs.trajectory_record)."""
    chars: dict[int, list[int]] = {}
    for rec in samples:
        for t, turn in enumerate(rec["turns"], start=1):
            chars.setdefault(t, []).append(len(turn["text"]))
    return {t: sum(v) / len(v) for t, v in chars.items()}


def extraction_rule(run: Run) -> str:
    """The code-extraction rule of a run's final numbers (cocos.data.prompts.extract_code); '-' without metrics."""
    rule = run.metrics.get("extraction") or run.config.get("extraction")
    if rule:
        return str(rule)
    # metrics written before the field existed: the package then always ran the longest parsing prefix
    return "lenient (not recorded)" if run.metrics else "-"


def _describe_train(run: Run) -> str:
    c = run.config
    bits = []
    for key in ("method", "reward", "gamma", "mode", "k", "problems_per_step", "max_steps", "model"):
        if key in c and not isinstance(c[key], (dict, list)):
            bits.append(f"{key}={c[key]}")
    return ", ".join(bits)


# ---- plots --------------------------------------------------------------------------------------
def _plt():
    return pyplot()


def _bar_groups(ax, labels: list[str], series: dict[str, list[float | None]], ylabel: str, percent: bool = True):
    n = max(len(series), 1)
    width = 0.8 / n
    xs = range(len(labels))
    for j, (name, values) in enumerate(series.items()):
        pos = [x - 0.4 + width * (j + 0.5) for x in xs]
        vals = [(100 * v if percent else v) if v is not None else 0.0 for v in values]
        bars = ax.bar(pos, vals, width, label=name)
        for b, v in zip(bars, values):
            if v is not None:
                txt = f"{100 * v:.1f}" if percent else f"{v:.0f}"
                ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    top = max([(100 * v if percent else v) for vals in series.values() for v in vals if v is not None] or [1.0])
    if top > 0:
        ax.set_ylim(top=top * 1.25)  # headroom for the value labels and the legend
    if len(series) > 1:
        ax.legend(fontsize=8, ncol=len(series), loc="upper left")


def _bar_chart(runs: list[Run], series: dict, ylabel: str, title: str, path: Path, zero_line: bool = False) -> None:
    """One grouped bar chart (a group per run), saved as PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(runs) + 2), 4))
    _bar_groups(ax, [r.label for r in runs], series, ylabel)
    if zero_line:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(runs: list[Run], path: Path) -> bool:
    runs = [r for r in runs if turns_of(r.metrics)]
    if not runs:
        return False
    turns = sorted({t for r in runs for t in turns_of(r.metrics)})
    series = {f"turn {t}": [_num(r.metrics.get(f"acc@{t}")) for r in runs] for t in turns}
    _bar_chart(runs, series, "accuracy (%)", "Accuracy at each turn", path)
    return True


def _metric_bars(runs: list[Run], keys: dict, ylabel: str, title: str, path: Path, zero_line: bool = False) -> bool:
    """Bars of the metrics `keys` (label -> metrics.json key) for the runs that have any of them."""
    runs = [r for r in runs if any(k in r.metrics for k in keys.values())]
    if not runs:
        return False
    series = {name: [_num(r.metrics.get(k)) for r in runs] for name, k in keys.items()}
    _bar_chart(runs, series, ylabel, title, path, zero_line)
    return True


def plot_deltas(runs: list[Run], pair: tuple[int, int], path: Path) -> bool:
    a, b = pair
    keys = {"delta": f"delta({a},{b})", "i->c": f"delta_i2c({a},{b})", "c->i": f"delta_c2i({a},{b})"}
    return _metric_bars(runs, keys, "share of problems (%)", f"Self-correction from turn {a} to turn {b}", path,
                        zero_line=True)


def plot_unit(runs: list[Run], pair: tuple[int, int], path: Path) -> bool:
    a, b = pair
    # short names: four legend entries fit the width of a one-run chart
    keys = {"improve": f"unit_improve({a},{b})", "worsen": f"unit_worsen({a},{b})",
            "preserve": f"unit_preserve({a},{b})", "edit sim": f"edit_sim({a},{b})"}
    return _metric_bars(runs, keys, "%", f"Unit level and edit similarity, turn {a} -> {b}", path)


def plot_curves(runs: list[Run], stem: str, ylabel: str, title: str, path: Path) -> bool:
    """One panel per turn; every training run overlaid (gamma ablations side by side)."""
    data = {r.label: per_turn_series(r.log, stem) for r in runs if r.kind == "train" and r.log}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return False
    turns = sorted({t for v in data.values() for t in v})
    plt = _plt()
    fig, axes = plt.subplots(1, len(turns), figsize=(4.5 * len(turns), 3.6), squeeze=False)
    for ax, t in zip(axes[0], turns):
        for label, series in data.items():
            if t in series:
                xs, ys = zip(*series[t])
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set_title(f"{title}, turn {t}")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _scalar_series(log: list[dict], pattern: str) -> tuple[str, list[tuple[int, float]]]:
    pat = re.compile(pattern)
    name, pts = "", []
    for rec in log:
        for k, v in rec.items():
            if pat.match(k) and _num(v) is not None:
                name = k
                pts.append((rec["step"], float(v)))
                break
    return name, pts


def plot_scalars(runs: list[Run], path: Path) -> bool:
    """KL to the reference and edit similarity (turn 1 vs T) against steps, every training run overlaid."""
    panels = (("KL to reference", r"^kl$"), ("edit similarity (turn 1 vs T)", r"^edit_sim\(1,\d+\)$"))
    data = [[(r.label, *_scalar_series(r.log, pat)) for r in runs if r.kind == "train"] for _, pat in panels]
    if not any(pts for panel in data for _, _, pts in panel):
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for ax, (title, _), panel in zip(axes[0], panels, data):
        for label, _, pts in panel:
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_eval_lengths(runs: list[Run], path: Path) -> tuple[bool, str]:
    lens = {r.label: response_lengths(r.samples) for r in runs if r.samples}
    lens = {k: v for k, v in lens.items() if v}
    if not lens:
        return False, ""
    unit = "characters"
    turns = sorted({t for v in lens.values() for t in v})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(lens) + 2), 4))
    _bar_groups(ax, list(lens), {f"turn {t}": [lens[k].get(t) for k in lens] for t in turns}, f"mean response length ({unit})", percent=False)
    ax.set_title("Response length at each turn (evaluation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True, unit


# ---- the report ---------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> list[str]:
    """A Markdown table's lines: the header, its alignment row (numeric: the columns after the first right-aligned),
    one line per row of cells (strings). The report's tables and the claims page's (cocos.eval.claims)."""
    align = ["---"] + (["---:"] if numeric else ["---"]) * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _group_title(key: str | None, group: list[Run]) -> str:
    """A dataset's name; for training runs alone, which evaluation their numbers come from (not the held-out one)."""
    if key is None and group and all(r.kind == "train" for r in group):
        evals = {(r.config.get("eval_dataset"), r.config.get("eval_split")) for r in group}
        if len(evals) == 1 and None not in next(iter(evals)):
            ds, split = next(iter(evals))
            return f"the training runs' own last evaluation ({dataset_title(ds)} {split})"
        return "the training runs' own last evaluation"
    return dataset_title(key)


def delta_table(runs: list[Run], pair: tuple[int, int]) -> list[str]:
    a, b = pair
    cols = [f"acc@{a}", f"acc@{b}", f"delta({a},{b})", f"delta_i2c({a},{b})", f"delta_c2i({a},{b})"]
    # only the runs that went to turn b: a 2-turn run has acc@1 but nothing to say about turn 1 -> turn 5
    rows = [[r.label] + [pct(r.metrics.get(c)) for c in cols] for r in runs if cols[2] in r.metrics]
    if not rows:
        return []
    return markdown_table(["Method", f"acc@t{a}", f"acc@t{b}", f"Δ(t{a},t{b})", f"Δi→c(t{a},t{b})", f"Δc→i(t{a},t{b})"],
                          rows)


def unit_table(runs: list[Run], pair: tuple[int, int]) -> list[str]:
    a, b = pair
    cols = [f"unit_improve({a},{b})", f"unit_worsen({a},{b})", f"unit_preserve({a},{b})", f"edit_sim({a},{b})"]
    def value(r, c):
        return "n/a" if c == cols[2] and c in r.metrics and nothing_to_preserve(r, a, b) else pct(r.metrics.get(c))

    rows = [[r.label] + [value(r, c) for c in cols] for r in runs if any(c in r.metrics for c in cols)]
    if not rows:
        return []
    return markdown_table(["Method", "unit improve", "unit worsen", "unit preserve", "edit similarity"], rows)


def old_unit_runs(runs: list[Run], pair: tuple[int, int]) -> list[str]:
    """Runs scored before unit_worsen existed: their unit_preserve is the old per-problem mean."""
    a, b = pair
    return [r.label for r in runs if f"unit_preserve({a},{b})" in r.metrics and f"unit_worsen({a},{b})" not in r.metrics]


def _detail(md: list[str], skipped: list[str], runs: list[Run], out: Path, suffix: str, where: str) -> None:
    """Accuracy bars, per-pair delta and unit tables and plots, response lengths: for the runs of one dataset.
    `suffix` goes into every PNG name ("" for a report of one dataset), `where` into every heading."""
    scored = [r for r in runs if r.metrics]
    md += [f"## Accuracy at each turn{where}", ""]
    if plot_accuracy(scored, out / f"accuracy{suffix}.png"):
        md += [f"![accuracy at each turn](accuracy{suffix}.png)", ""]
    else:
        skipped.append(f"accuracy bars{where}: no run has acc@t metrics")
    pairs = turn_pairs(scored)
    if not pairs:
        skipped.append(f"delta tables{where}: no run has delta(t1,t2) metrics")
    for pair in pairs:
        a, b = pair
        md += [f"## Self-correction, turn {a} → turn {b}{where} (shares of problems, %)", ""]
        md += delta_table(scored, pair) + [""]
        name = (f"deltas{suffix}.png" if pair == (1, 2) else f"deltas_{a}_{b}{suffix}.png")
        if plot_deltas(scored, pair, out / name):
            md += [f"![deltas]({name})", ""]
        ut = unit_table(scored, pair)
        md += [f"### Unit-level improvement and preservation, turn {a} → turn {b}{where} (%)", ""]
        if ut:
            md += ut + [""]
            old = old_unit_runs(scored, pair)
            if old:
                md += [f"Scored before 2026-11-27 ({', '.join(old)}): unit preserve is the old per-problem mean, which "
                       "counts a problem with no test passed as preserved; re-score their samples.jsonl with "
                       "`cocos eval --samples`.", ""]
            name = f"unit{suffix}.png" if pair == (1, 2) else f"unit_{a}_{b}{suffix}.png"
            if plot_unit(scored, pair, out / name):
                md += [f"![unit-level metrics]({name})", ""]
        else:
            md += ["No run has unit-level metrics for this pair.", ""]
    md += [f"## Response length{where} (evaluation samples)", ""]
    ok, unit = plot_eval_lengths(runs, out / f"lengths{suffix}.png")
    if ok:
        md += [f"Mean length of the model's answer at each turn, in {unit}.", "", f"![response lengths](lengths{suffix}.png)",
               ""]
    else:
        md += ["No evaluation run has samples with responses: no length plot.", ""]
        skipped.append(f"response-length bars{where}: no samples.jsonl with turns")


def _learning_curves(md: list[str], skipped: list[str], train: list[Run], out: Path) -> None:
    md += ["## Learning curves", ""]
    if not train:
        md += ["No training run among the folders: no learning curves.", ""]
        return
    made = False
    for stems, ylabel, title_, fname in (
        (("reward",), "mean reward", "Reward", "reward_curves.png"),
        (("kl",), "KL to reference (nats)", "KL per turn", "kl_turn_curves.png"),  # SCoRe's collapse is turn 1's
        (("acc",), "accuracy", "Training accuracy", "train_acc_curves.png"),
        (("length", "response_length"), "tokens", "Response length", "length_curves.png"),
    ):
        if any(plot_curves(train, stem, ylabel, title_, out / fname) for stem in stems):
            md += [f"![{title_}]({fname})", ""]
            made = True
        else:
            skipped.append(f"{title_.lower()} curves: no training log has per-turn `{stems[0]}` values")
    if plot_scalars(train, out / "kl_edit_sim_curves.png"):
        md += ["![KL and edit similarity](kl_edit_sim_curves.png)", ""]
        made = True
    else:
        skipped.append("KL / edit-similarity curves: no training log has `kl` or `edit_sim(1,T)`")
    if not made:
        md += ["No training log has per-turn values to plot.", ""]
    else:
        md += ["KL: the trainer's per-token estimate against the reference, summed over a turn's tokens and averaged "
               "over the trained trajectories. With the default estimator k1 (log π − log π_ref, the one in the "
               "reward) it is unbiased but not positive term by term: a step's value can be slightly below 0.", ""]
    ev_rows = []
    for r in train:
        if len(r.evals) >= 1:
            first_step, first = r.evals[0]
            last_step, last = r.evals[-1]
            T = max(turns_of(last) or [1])
            ev_rows.append([r.label, str(first_step), pct(first.get(f"acc@{T}")), str(last_step), pct(last.get(f"acc@{T}"))])
    if ev_rows:
        md += ["Last-turn accuracy at the first and last evaluation of each training run (%):", ""]
        md += markdown_table(["Method", "first eval step", "acc@T", "last eval step", "acc@T"], ev_rows) + [""]


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def build_report(run_dirs: list[str | Path], out_dir: str | Path, labels: list[str] | None = None, title: str = "CoCoS comparison",
                 budget: str | None = None) -> Path:
    """report.md (+ PNGs) in out_dir. Folders with the same label are one method: its evaluations on several
    datasets (config.json's "dataset") are one row of the paper's table (cocos.eval.report_paper), its training run
    gives its learning curves."""
    if not run_dirs:
        raise UserError("no run folders given: pass one or more folders written by `cocos eval` / `cocos train`")
    if labels and len(labels) != len(run_dirs):
        raise UserError(f"--label was given {len(labels)} times for {len(run_dirs)} run folders: give one label per folder, in order")
    runs = [read_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    if not any(Path(d).is_dir() for d in run_dirs):
        raise UserError(f"none of the run folders exists ({', '.join(map(str, run_dirs))}): pass folders written by `cocos eval` or `cocos train`")
    seen: dict[tuple, int] = {}
    for r in runs:  # the same method on another dataset or turn count is not a duplicate; else it would be overwritten
        key = (r.label, r.kind, dataset_key(r), n_turns(r.metrics))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            r.label = f"{r.label} ({seen[key]})"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = [r for r in runs if r.metrics]
    md: list[str] = [f"# {title}", ""] + ([f"Budget: {budget}.", ""] if budget else [])
    skipped: list[str] = []

    # Runs
    md += ["## Runs", ""]
    rows = []
    for r in runs:
        n = r.metrics.get("n_problems")
        src = r.metrics_source or "-"
        extra = _describe_train(r) if r.kind == "train" else str(r.config.get("model", "") or "")
        ds = dataset_title(dataset_key(r)) if dataset_key(r) else "-"
        rows.append([r.label, r.kind, f"`{r.path}`", "-" if n is None else str(n), src, extraction_rule(r), extra or "-",
                     ds, str(n_turns(r.metrics) or "-")])
    md += markdown_table(["Method", "kind", "folder", "problems", "final numbers from", "extraction", "settings",
                          "dataset", "turns"], rows, numeric=False) + [""]
    rules = {extraction_rule(r).split()[0] for r in scored}
    md += ["Extraction: the rule for an answer without `[DONE]`: strict runs it whole (the paper's rule), lenient "
           "runs its longest prefix that parses (more credit to truncated answers)."
           + (" **These runs use different rules: their accuracies are not comparable.**" if len(rules) > 1 else ""), ""]
    for r in runs:
        for note in r.notes:
            md.append(f"- {r.label}: {note}.")
    if any(r.notes for r in runs):
        md.append("")

    # The paper's layout: methods x datasets, every number with its standard error; then turns beyond two
    paper = paper_tables(runs, budget)
    md += paper + acc_by_turn_section(runs, out, budget)
    if paper:
        md += ["The sections below give each dataset's numbers per pair of turns, as plain values (their standard errors "
               "are in the tables above), and their plots.", ""]

    # Details per dataset (one dataset, or none recorded: one set of sections, as before)
    groups: dict = {}
    for r in runs:
        groups.setdefault(dataset_key(r), []).append(r)
    # a group needs something to show (folders that were never made, or training runs alone, have their own lines)
    keys = [k for k in dataset_order(groups) + ([None] if None in groups else [])
            if any(r.metrics or r.samples for r in groups[k])] or [None]
    groups.setdefault(None, [])
    for key in keys:
        group = groups[key]
        if len(keys) > 1:
            turns = {}  # a method's 2- and 5-turn runs side by side: name the longer one
            for r in group:
                turns.setdefault(r.label, set()).add(n_turns(r.metrics))
            group = [replace(r, label=f"{r.label} ({n_turns(r.metrics)} turns)")
                     if len(turns[r.label]) > 1 and n_turns(r.metrics) != 2 else r for r in group]
        suffix = f"_{_slug(key)}" if len(keys) > 1 and key else ("_other" if len(keys) > 1 else "")
        where = f": {_group_title(key, group)}" if len(keys) > 1 else ""
        _detail(md, skipped, group, out, suffix, where)

    _learning_curves(md, skipped, [r for r in runs if r.kind == "train"], out)

    if skipped:
        md += ["## Skipped", ""] + [f"- {s}." for s in skipped] + [""]
    md += [
        "Shares are percentages of the problems evaluated. Δ = acc@t2 − acc@t1; Δi→c: wrong at t1 and right at t2;",
        "Δc→i: right at t1 and wrong at t2 (so Δ = Δi→c − Δc→i). Unit improve / worsen: share of problems whose count of",
        "passed tests rose / fell from t1 to t2. Unit preserve: tests passed at t1 that still pass at t2, over all tests passed",
        "at t1, pooled over every problem and sample (n/a when no test passed at t1: nothing to preserve).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
