"""The paper's tables for `cocos report` (cocos.eval.report): methods as rows, datasets as column groups, every number
with its standard error; the unit-level table; accuracy at each turn beyond the trained two (a figure and a table).

Runs are evaluation folders (`cocos eval`) whose config.json names the dataset; a method is a label (--label), so
the folders of one method on MBPP, HumanEval and ODEX make one row. Where a method has several runs on a dataset
(2 turns for the table, 5 for the turn analysis), the table takes the 2-turn run (else the one with fewest turns)
and the turn analysis the one with most turns.

Standard errors (`standard_error`), over the n problems a metric averages over (metrics.json "n_problems"):
- a share of problems p (acc@t, Δi→c, Δc→i, unit improve, unit worsen): sqrt(p (1 - p) / n);
- Δ = acc@t2 - acc@t1, a mean of per-problem changes in {-1, 0, +1}: sqrt((Δi→c + Δc→i - Δ^2) / n) (paired);
- unit preserve, pooled over the tests passed at t1: sqrt(p (1 - p) / m), m those tests (from samples.jsonl; tests of
  one problem are not independent, so this understates it);
- edit similarity, a mean of per-problem similarities: their standard deviation / sqrt(n) (from samples.jsonl).
With several samples per problem the per-problem means are treated as n observations (the samples' spread within
a problem is not counted).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

DATASET_NAMES = {"mbpp": "MBPP", "humaneval": "HumanEval", "odex": "ODEX", "mbpp-sanitized": "MBPP sanitized"}
PAPER_COLUMNS = (("acc@1", "acc@t1"), ("acc@2", "acc@t2"), ("delta(1,2)", "Δ(t1,t2)"), ("delta_i2c(1,2)", "Δi→c(t1,t2)"),
                 ("delta_c2i(1,2)", "Δc→i(t1,t2)"))
UNIT_COLUMNS = (("unit_improve(1,2)", "improve"), ("unit_worsen(1,2)", "worsen"), ("unit_preserve(1,2)", "preserve"),
                ("edit_sim(1,2)", "edit sim"))
_ACC = re.compile(r"^acc@(\d+)$")
_PAIR = re.compile(r"^(\w+)\((\d+),(\d+)\)$")
SE_NOTE = ("Each cell: value ± standard error, in percentage points, over the n problems of its dataset. A share p of "
           "n problems (acc, Δi→c, Δc→i, unit improve / worsen) has standard error sqrt(p(1−p)/n) (0 at p = 0 or 1, where 3/n bounds the true share instead); Δ, a paired "
           "difference, sqrt((Δi→c + Δc→i − Δ²)/n); unit preserve, pooled over the m tests passed at t1, sqrt(p(1−p)/m) "
           "(tests of one problem are not independent: a lower bound); edit similarity, the standard deviation of the "
           "per-problem similarities / sqrt(n). Two methods whose values differ by less than about twice their standard "
           "errors are not told apart by this evaluation.")


def pyplot():
    """matplotlib's pyplot drawing to files only (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Lay the figure out, write it to `path` (making its folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


# ---- which run is which ---------------------------------------------------------------------------
def dataset_key(run) -> str | None:
    """An evaluation run's dataset ("mbpp", "humaneval", ...; a split other than test is added), None otherwise."""
    if run.kind != "eval" or not run.config.get("dataset"):
        return None
    ds, split = str(run.config["dataset"]), run.config.get("split")
    return ds if split in (None, "test") else f"{ds} ({split})"


def dataset_title(key: str | None) -> str:
    if key is None:
        return "other runs"
    base, _, rest = key.partition(" ")
    return (DATASET_NAMES.get(base, base) + (" " + rest if rest else "")).strip()


def dataset_order(keys) -> list[str]:
    order = list(DATASET_NAMES)
    return sorted({k for k in keys if k is not None}, key=lambda k: (order.index(k.split(" ")[0]) if k.split(" ")[0] in
                                                                      order else len(order), k))


def n_turns(metrics: dict) -> int:
    return max((int(m.group(1)) for k in metrics if (m := _ACC.match(k))), default=0)


def _by_method(runs) -> dict[str, dict[str, list]]:
    """label -> dataset -> its scored evaluation runs, labels in the order given."""
    out: dict[str, dict[str, list]] = {}
    for r in runs:
        key = dataset_key(r)
        if key is not None and r.metrics:
            out.setdefault(r.label, {}).setdefault(key, []).append(r)
    return out


def table_run(runs: list):
    """The run a table cell comes from: 2 turns if there is one, else the fewest turns (at least 2)."""
    two = [r for r in runs if n_turns(r.metrics) == 2]
    more = sorted((r for r in runs if n_turns(r.metrics) >= 2), key=lambda r: n_turns(r.metrics))
    return (two or more or [None])[0]


# ---- standard errors ------------------------------------------------------------------------------
def number(x) -> float | None:
    """A finite int or float as a float; None for anything else (a bool, None, NaN, a string)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def proportion_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def _samples_stats(run, a: int, b: int) -> tuple[int | None, float | None]:
    """(tests passed at turn a, pooled over the samples; standard error of the mean per-problem edit similarity of
    the codes of turns a and b) from samples.jsonl, or None where the samples lack them."""
    from cocos.eval.metrics import edit_similarity

    passed, sims = 0, {}
    ok = bool(run.samples)
    for rec in run.samples:
        turns = rec.get("turns") or []
        if len(turns) < b or "passed" not in turns[a - 1]:
            ok = False
            break
        passed += int(turns[a - 1]["passed"])
        sims.setdefault(str(rec.get("task_id")), []).append(
            edit_similarity(turns[a - 1].get("code", ""), turns[b - 1].get("code", "")))
    if not ok:
        return None, None
    per_problem = [sum(v) / len(v) for v in sims.values()]
    n = len(per_problem)
    if n < 2:
        return passed, None
    mean = sum(per_problem) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_problem) / (n - 1))
    return passed, sd / math.sqrt(n)


def standard_error(run, key: str) -> float | None:
    """The standard error of metrics[key] (module docstring), or None where it cannot be told."""
    m = run.metrics
    p, n = number(m.get(key)), m.get("n_problems")
    if p is None or not isinstance(n, int) or n < 1:
        return None
    if _ACC.match(key):
        return proportion_se(p, n)
    pair = _PAIR.match(key)
    if not pair:
        return None
    name, a, b = pair.group(1), int(pair.group(2)), int(pair.group(3))
    if name in ("delta_i2c", "delta_c2i", "unit_improve", "unit_worsen"):
        return proportion_se(p, n)
    if name == "delta":
        i2c, c2i = number(m.get(f"delta_i2c({a},{b})")), number(m.get(f"delta_c2i({a},{b})"))
        return None if i2c is None or c2i is None else math.sqrt(max(i2c + c2i - p * p, 0.0) / n)
    if name == "unit_preserve":
        tests, _ = _samples_stats(run, a, b)
        return proportion_se(p, tests) if tests else None
    if name == "edit_sim":
        return _samples_stats(run, a, b)[1]
    return None


def nothing_to_preserve(run, a: int, b: int) -> bool:
    """No test passed at turn a: unit_preserve(a,b)'s 100% is a convention, not a measurement (shown as n/a)."""
    base = run.metrics.get(f"unit_preserve_base({a},{b})")
    if base is None:  # scored before the count was recorded: from the samples, where they hold it
        base = _samples_stats(run, a, b)[0]
    return base == 0


def cell(run, key: str) -> str:
    """'12.3 ± 4.5' (percentage points), '12.3 ± ?' without a standard error, '-' without the metric, 'n/a' for a
    unit preserve with nothing to preserve."""
    if run is None or number(run.metrics.get(key)) is None:
        return "-"
    pair = _PAIR.match(key)
    if pair and pair.group(1) == "unit_preserve" and nothing_to_preserve(run, int(pair.group(2)), int(pair.group(3))):
        return "n/a"
    se = standard_error(run, key)
    return f"{100 * run.metrics[key]:.1f} ± " + ("?" if se is None else f"{100 * se:.1f}")


# ---- tables ---------------------------------------------------------------------------------------
def _n_text(runs: list) -> str:
    ns = sorted({r.metrics.get("n_problems") for r in runs if r is not None})
    return "n=" + "/".join(str(n) for n in ns) if ns else ""


def grouped_table(runs, columns, caption: str) -> list[str]:
    """An HTML table (Markdown has no column groups): a row per method, a column group per dataset."""
    methods = _by_method(runs)
    datasets = dataset_order(k for d in methods.values() for k in d)
    if not methods:
        return []
    chosen = {(lab, ds): table_run(methods[lab].get(ds, [])) for lab in methods for ds in datasets}
    head1 = "".join(f'<th colspan="{len(columns)}">{dataset_title(ds)} '
                    f'({_n_text([chosen[lab, ds] for lab in methods])})</th>' for ds in datasets)
    head2 = "".join(f"<th>{name}</th>" for _ in datasets for _, name in columns)
    rows = ["<tr><td>" + lab + "</td>" + "".join(f"<td>{cell(chosen[lab, ds], key)}</td>" for ds in datasets
                                                for key, _ in columns) + "</tr>" for lab in methods]
    return ["<table>", f"<caption>{caption}</caption>", f'<tr><th rowspan="2">Method</th>{head1}</tr>', f"<tr>{head2}</tr>",
            *rows, "</table>", ""]


def paper_tables(runs, budget: str | None) -> list[str]:
    """The paper's comparison and the unit-level table, as report.md lines (empty without dataset-tagged runs)."""
    budget_text = f"budget {budget}" if budget else "budget not given (cocos report --budget)"
    main = grouped_table(runs, PAPER_COLUMNS, f"Self-correction from turn 1 to turn 2 (%), {budget_text}")
    if not main:
        return []
    unit = grouped_table(runs, UNIT_COLUMNS, f"Unit level, turn 1 → turn 2 (%), {budget_text}")
    return (["## The paper's table", "", *main, SE_NOTE, "",
             "Δ = acc@t2 − acc@t1; Δi→c: wrong at turn 1, right at turn 2; Δc→i: right at turn 1, wrong at turn 2.", "",
             "### Unit level (DESIGN.md)", "", *unit,
             "Improve / worsen: share of problems whose count of passed tests rose / fell from turn 1 to turn 2. "
             "Preserve: tests passed at turn 1 that still pass at turn 2, over all tests passed at turn 1, pooled over "
             "problems and samples (n/a when no test passed at turn 1: nothing to preserve). Edit sim: mean similarity of "
             "the two codes.", ""])


# ---- accuracy beyond the trained turns -------------------------------------------------------------
def turn_runs(runs) -> dict[str, dict[str, object]]:
    """dataset -> label -> the run with most turns, for the methods evaluated over more than 2 turns."""
    out: dict[str, dict[str, object]] = {}
    for lab, by_ds in _by_method(runs).items():
        for ds, rs in by_ds.items():
            best = max(rs, key=lambda r: n_turns(r.metrics))
            if n_turns(best.metrics) > 2:
                out.setdefault(ds, {})[lab] = best
    return out


def plot_acc_by_turn(runs, path: Path) -> bool:
    """acc@t against t, a panel per dataset, a line per method, ±1 standard error bars."""
    data = turn_runs(runs)
    if not data:
        return False
    plt = pyplot()
    datasets = dataset_order(data)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        k = len(data[ds])
        for j, (lab, r) in enumerate(data[ds].items()):
            ts = list(range(1, n_turns(r.metrics) + 1))
            ys = [100 * r.metrics[f"acc@{t}"] for t in ts]
            es = [100 * (standard_error(r, f"acc@{t}") or 0.0) for t in ts]
            shift = 0.06 * (j - (k - 1) / 2)  # side by side, so the error bars do not hide each other
            ax.errorbar([t + shift for t in ts], ys, yerr=es, marker="o", capsize=3, label=lab)
        ax.axvline(2, color="grey", lw=0.8, ls=":")  # the methods are trained for 2 turns
        ax.set_title(f"{dataset_title(ds)} ({_n_text(list(data[ds].values()))})")
        ax.set_xlabel("turn")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(range(1, max(n_turns(r.metrics) for r in data[ds].values()) + 1))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)
    return True


def acc_by_turn_section(runs, out: Path, budget: str | None) -> list[str]:
    data = turn_runs(runs)
    if not data:
        return []
    plot_acc_by_turn(runs, out / "acc_by_turn.png")
    md = ["## Accuracy at each turn, beyond the two trained turns", "",
          f"Greedy episodes of more than 2 turns ({'budget ' + budget if budget else 'budget not given'}); the dotted "
          "line marks turn 2, the last turn the methods were trained for. Bars and cells: ± one standard error.", "",
          "![accuracy at each turn](acc_by_turn.png)", ""]
    for ds in dataset_order(data):
        T = max(n_turns(r.metrics) for r in data[ds].values())
        md += [f"{dataset_title(ds)} ({_n_text(list(data[ds].values()))}), acc@t (%):", "",
               "| Method | " + " | ".join(f"acc@{t}" for t in range(1, T + 1)) + " |",
               "|---|" + "---:|" * T]
        md += [f"| {lab} | " + " | ".join(cell(r, f"acc@{t}") for t in range(1, T + 1)) + " |"
               for lab, r in data[ds].items()]
        md.append("")
    return md
