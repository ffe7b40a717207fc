"""The figures of `cocos report` (cocos.eval.report), PNGs from run folders: accuracy at each turn, corrections and
unit-level metrics per run (bars), training runs' per-turn curves, KL and edit similarity, response lengths; and the
numbers of a run folder they read.
"""

from __future__ import annotations

import re
from pathlib import Path

from cocos.eval.report_paper import number, pyplot, save_figure
from cocos.eval.runs import Run

_ACC_KEY = re.compile(r"^acc@(\d+)$")


# ---- numbers ------------------------------------------------------------------------------------
def turns_of(metrics: dict) -> list[int]:
    return sorted(int(m.group(1)) for k in metrics if (m := _ACC_KEY.match(k)))


def per_turn_series(log: list[dict], stem: str) -> dict[int, list[tuple[int, float]]]:
    """{turn: [(step, value), ...]} for a per-turn quantity of a training log ("reward@1", "kl@2", ...)."""
    pat = re.compile(rf"^{re.escape(stem)}@(\d+)$")
    out: dict[int, list[tuple[int, float]]] = {}
    for rec in log:
        for k, x in rec.items():
            m = pat.match(k)
            if m and number(x) is not None:
                out.setdefault(int(m.group(1)), []).append((rec["step"], float(x)))
    return out


def response_lengths(samples: list[dict]) -> dict[int, float]:
    """Mean response length per turn, in characters, from evaluation samples (cocos.eval.runs.trajectory_record)."""
    chars: dict[int, list[int]] = {}
    for rec in samples:
        for t, turn in enumerate(rec["turns"], start=1):
            chars.setdefault(t, []).append(len(turn["text"]))
    return {t: sum(v) / len(v) for t, v in chars.items()}


# ---- plots --------------------------------------------------------------------------------------
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(runs) + 2), 4))
    _bar_groups(ax, [r.label for r in runs], series, ylabel)
    if zero_line:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_title(title)
    save_figure(fig, path)


def plot_accuracy(runs: list[Run], path: Path) -> bool:
    runs = [r for r in runs if turns_of(r.metrics)]
    if not runs:
        return False
    turns = sorted({t for r in runs for t in turns_of(r.metrics)})
    series = {f"turn {t}": [number(r.metrics.get(f"acc@{t}")) for r in runs] for t in turns}
    _bar_chart(runs, series, "accuracy (%)", "Accuracy at each turn", path)
    return True


def _metric_bars(runs: list[Run], keys: dict, ylabel: str, title: str, path: Path, zero_line: bool = False) -> bool:
    """Bars of the metrics `keys` (label -> metrics.json key) for the runs that have any of them."""
    runs = [r for r in runs if any(k in r.metrics for k in keys.values())]
    if not runs:
        return False
    series = {name: [number(r.metrics.get(k)) for r in runs] for name, k in keys.items()}
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
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def _scalar_series(log: list[dict], pattern: str) -> tuple[str, list[tuple[int, float]]]:
    pat = re.compile(pattern)
    name, pts = "", []
    for rec in log:
        for k, v in rec.items():
            if pat.match(k) and number(v) is not None:
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
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def plot_eval_lengths(runs: list[Run], path: Path) -> tuple[bool, str]:
    lens = {r.label: response_lengths(r.samples) for r in runs if r.samples}
    lens = {k: v for k, v in lens.items() if v}
    if not lens:
        return False, ""
    unit = "characters"
    turns = sorted({t for v in lens.values() for t in v})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(lens) + 2), 4))
    _bar_groups(ax, list(lens), {f"turn {t}": [lens[k].get(t) for k in lens] for t in turns}, f"mean response length ({unit})", percent=False)
    ax.set_title("Response length at each turn (evaluation)")
    save_figure(fig, path)
    return True, unit
