"""Tables and plots from run folders: the paper's comparison, as Markdown and PNG.

    build_report(run_dirs, out_dir, labels=None, budget=None) -> Path   # out_dir/report.md (+ PNGs beside it)

A run folder is either
- an evaluation run: metrics.json (flat keys "acc@1", "delta(1,2)", ...), samples.jsonl, config.json;
- a training run: config.yaml, log.jsonl (one JSON object per step), eval/step_N/metrics.json,
  checkpoints/step_N. Its "final" numbers are those of its last evaluation.
Any mix works; whatever a folder lacks is skipped with a line in the report saying so. Folders given the same
label are one method: its evaluations on MBPP, HumanEval and ODEX make one row of the paper's table, with standard
errors (cocos.eval.report_paper), and a run of more than 2 turns adds it to the accuracy-by-turn figure. The detailed
sections (accuracy bars, delta and unit tables, response lengths) come once per dataset. The figures are drawn by
cocos.eval.report_plots.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from cocos.errors import UserError
from cocos.eval.report_paper import (acc_by_turn_section, dataset_key, dataset_order, dataset_title, n_turns,
                                     nothing_to_preserve, paper_tables)
from cocos.eval.report_plots import (number, plot_accuracy, plot_curves, plot_deltas, plot_eval_lengths, plot_scalars,
                                     plot_unit, turns_of)
from cocos.eval.runs import Run, read_run

_PAIR_KEY = re.compile(r"^delta\((\d+),(\d+)\)$")


# ---- numbers ------------------------------------------------------------------------------------
def pct(x) -> str:
    """A share in [0, 1] as a percentage with one decimal; '-' when missing."""
    v = number(x)
    return "-" if v is None else f"{100 * v:.1f}"


def turn_pairs(runs: list[Run]) -> list[tuple[int, int]]:
    """Every (t1, t2) pair some run has metrics for; (1, 2) first, as in the paper."""
    pairs = {(int(m.group(1)), int(m.group(2))) for r in runs for k in r.metrics if (m := _PAIR_KEY.match(k))}
    return sorted(pairs, key=lambda p: (p != (1, 2), p))


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


# ---- the report ---------------------------------------------------------------------------------
def page_main(argv: list[str] | None, prog: str, doc: str, script: str, build) -> int:
    """The command line of a study's page (`python -m cocos.eval.report_correction OUT`, ...): `build(out, page,
    budget)` writes it from the folder `script` filled and returns its path."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n")[0])
    ap.add_argument("out", type=Path, help=f"{script}'s OUT folder")
    ap.add_argument("--out", dest="page", type=Path, help="where the page goes (default OUT/page)")
    ap.add_argument("--budget", default="", help="one line on the budget, printed at the top")
    args = ap.parse_args(argv)
    if not args.out.is_dir():
        raise SystemExit(f"{args.out}: no such folder ({script} writes it)")
    print(build(args.out, args.page or args.out / "page", args.budget))
    return 0


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
