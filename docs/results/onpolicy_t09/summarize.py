"""Tables and a plot of the before/after on-policy runs (run.sh): python summarize.py RUNS_DIR OUT_DIR."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
logs, evals = {}, {}
for name in ("before", "after"):
    logs[name] = [json.loads(x) for x in (runs / name / "log.jsonl").read_text().splitlines() if x.strip()]
    evals[name] = {int(p.parent.name[5:]): json.loads(p.read_text()) for p in (runs / name / "eval").glob("step_*/metrics.json")}
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "log.jsonl").write_text((runs / name / "log.jsonl").read_text())
    for step, m in evals[name].items():
        (out / name / f"eval_step{step}.json").write_text(json.dumps(m, indent=2) + "\n")

keys = ["reward@1", "reward@2", "kl", "loss", "grad_norm", "trained_frac"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
for name, style in (("before", "--o"), ("after", "-s")):
    steps = [s["step"] for s in logs[name]]
    for ax, key in zip(axes, ["reward@1", "reward@2", "kl", "grad_norm"]):
        ax.plot(steps, [s[key] for s in logs[name]], style, label=name)
        ax.set_title(key)
        ax.set_xlabel("step")
axes[0].legend()
fig.tight_layout()
fig.savefig(out / "curves.png", dpi=110)

lines = ["| run | step | " + " | ".join(keys) + " | logprob gap (mean / max) |", "|---" * (len(keys) + 3) + "|"]
for name in ("before", "after"):
    for s in logs[name]:
        gap = f"{s['logprob_gap_mean']:.4f} / {s['logprob_gap_max']:.3f}" if "logprob_gap_mean" in s else "not logged"
        lines.append(f"| {name} | {s['step']} | " + " | ".join(f"{s.get(k, float('nan')):.4f}" for k in keys) + f" | {gap} |")
lines += ["", "| run | eval step | acc@1 | acc@2 | delta | delta_i2c | delta_c2i |", "|---|---|---|---|---|---|---|"]
for name in ("before", "after"):
    for step in sorted(evals[name]):
        m = evals[name][step]
        get = lambda k: m.get(k, m.get(k.replace("(1,2)", ""), float("nan")))  # noqa: E731
        lines.append(f"| {name} | {step} | {get('acc@1'):.3f} | {get('acc@2'):.3f} | {get('delta(1,2)'):+.3f} | "
                     f"{get('delta_i2c(1,2)'):.3f} | {get('delta_c2i(1,2)'):.3f} |")
(out / "tables.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
