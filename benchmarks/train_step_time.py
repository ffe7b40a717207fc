"""Seconds per `cocos train` step: the trainer as first built (HF generate in float32, every group trained)
against the fast path (rollout engine in bf16 where the CPU has AMX, groups without reward signal skipped),
in one run, same config, same problems, same seed.

    nice -n 10 python benchmarks/train_step_time.py [--config configs/cocos_cpu.yaml] [--steps 2] [--set k=v ...]

Each variant trains `--steps` steps from the same starting weights on the same problems (step i draws the same
problems in both); the samples differ between variants (another backend, another dtype), so the share of
groups skipped varies too: it is printed. Prints the phase times (generate / execute / train) per variant and
the ratio of mean step times. No evaluation, no checkpoints (eval_limit=0, save_every=0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {
    "before (hf fp32, all groups)": ["backend=hf", "rollout_dtype=model", "skip_uniform_groups=false"],
    "engine only (bf16 rollouts)": ["backend=auto", "rollout_dtype=auto", "skip_uniform_groups=false"],
    "after (engine bf16, skip uniform groups)": ["backend=auto", "rollout_dtype=auto", "skip_uniform_groups=true"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cocos_cpu.yaml")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override, repeatable")
    ap.add_argument("--only", action="append", default=None, help="run only the variants whose name contains this")
    args = ap.parse_args()

    import torch

    from cocos.train.config import load_config
    from cocos.train.trainer import Trainer

    print(f"torch threads: {torch.get_num_threads()}; config {args.config}; overrides {args.set or 'none'}", flush=True)
    results = {}
    for name, over in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        cfg = load_config(args.config, [*args.set, *over, "eval_limit=0", "save_every=0", "tensorboard=false",
                                        f"max_steps={args.steps}"])
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(cfg, out, progress=False)
            rows = []
            for _ in range(args.steps):
                t = time.perf_counter()
                s = trainer.train_step()
                rows.append((time.perf_counter() - t, s))
            del trainer
        mean = sum(r[0] for r in rows) / len(rows)
        results[name] = mean
        phases = " | ".join(f"step {i + 1}: {dt:.0f} s (generate {s['time_generate']:.0f}, execute "
                            f"{s['time_execute']:.0f}, train {s['time_train']:.0f}; trained {s.get('trained_frac', 1):.0%}, "
                            f"reward@1 {s['reward@1']:.3f})" for i, (dt, s) in enumerate(rows))
        print(f"{name}: {mean:.1f} s/step  [{phases}]", flush=True)
    names = list(results)
    if len(names) > 1:
        base = results[names[0]]
        for n in names[1:]:
            print(f"speed-up of {n!r} over {names[0]!r}: {base / results[n]:.2f}x")


if __name__ == "__main__":
    main()
