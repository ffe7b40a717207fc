"""Seconds per `cocos train` step, two measurements in one run, same config, same seed:

    nice -n 10 python benchmarks/train_step_time.py [--config configs/cocos_cpu.yaml] [--set k=v ...]
        update phase: one step's rollouts are sampled once, then replayed through the log-prob / KL / update phase
        by each way of running it (logprob_passes plain / shared-prefix, autocast none / bf16) from the same
        weights: identical work; prints the time of each, the ratio against the config's own setting with
        logprob_passes=plain (the trainer before the shared-prefix passes), and the largest gradient difference.
    ... --whole-steps [--steps 2]
        whole steps: the trainer as first built (HF generate in float32, every group trained) against the fast path
        (engine, bf16 rollouts, skipped uniform groups); the samples differ between variants (another backend,
        another dtype), so the share of groups skipped varies too: it is printed.

No evaluation, no checkpoints (eval_limit=0, save_every=0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {
    "before (hf fp32, all groups)": ["backend=hf", "rollout_dtype=model", "skip_uniform_groups=false"],
    "engine only (bf16 rollouts)": ["backend=auto", "rollout_dtype=auto", "skip_uniform_groups=false"],
    "after (engine bf16, skip uniform groups)": ["backend=auto", "rollout_dtype=auto", "skip_uniform_groups=true"],
}
PASSES = (("plain", "none"), ("plain", "bf16"), ("shared-prefix", "none"), ("shared-prefix", "bf16"))


def update_phase(args) -> None:
    import torch

    from cocos.generation.device import fast_bf16
    from cocos.rl.config import load_config
    from cocos.rl.trainer import Trainer

    cfg = load_config(args.config, [*args.set, "eval_limit=0", "save_every=0", "tensorboard=false", "max_steps=1"])
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, out, progress=False)
        t = time.perf_counter()
        trajs = tr.rollout([tr.problems[i] for i in tr.step_indices(0)], step=0)
        print(f"rollouts: {len(trajs)} trajectories in {time.perf_counter() - t:.0f} s", flush=True)
        own = "bf16" if tr.autocast_dtype is not None else "none"
        print_token_counts(tr, trajs)
        rows, grads = {}, {}
        spent = timed_forwards()
        for passes, autocast in PASSES:
            if autocast == "bf16" and not fast_bf16(tr.device):
                continue
            tr.cfg = replace(cfg, logprob_passes=passes)
            tr.dist.autocast_dtype = torch.bfloat16 if autocast == "bf16" else None  # the passes' autocast
            times = []
            for _ in range(args.repeats):
                tr.model.zero_grad(set_to_none=True)
                spent.clear()
                t = time.perf_counter()
                res = tr.optimize(trajs, step=0)
                times.append(time.perf_counter() - t)
            if spent:  # shared-prefix: forward time by model, the rest is mostly the backward
                fwd = sum(spent.values())
                print(f"    policy forward {spent.get('policy', 0):.1f} s, reference forward "
                      f"{spent.get('reference', 0):.1f} s, backward and the rest {times[-1] - fwd:.1f} s", flush=True)
            grads[passes, autocast] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                                       for p in tr.model.parameters()]
            rows[passes, autocast] = min(times)
            print(f"  logprob_passes={passes:13s} autocast={autocast:4s}: {min(times):6.1f} s (best of {len(times)}; "
                  f"loss {res.loss:+.6f}, {res.n_trained} of {len(trajs)} trajectories trained, "
                  f"{res.n_tokens} trained tokens)", flush=True)
        base = rows[("plain", own)]
        print(f"before = logprob_passes=plain, autocast={own} (the config's): {base:.1f} s")
        for key, sec in rows.items():
            print(f"  {key[0]:13s} {key[1]:4s}: {base / sec:.2f}x")
        for autocast in ("none", "bf16"):
            if ("plain", autocast) in grads and ("shared-prefix", autocast) in grads:
                diff = max(float((a - b).abs().max()) for a, b in zip(grads["plain", autocast], grads["shared-prefix", autocast]))
                scale = max(float(a.abs().max()) for a in grads["plain", autocast])
                print(f"largest gradient difference plain vs shared-prefix, autocast {autocast}: {diff:.2e} "
                      f"(largest gradient entry {scale:.2e})")


def timed_forwards() -> dict:
    """Wrap the shared-prefix forward so each call's seconds add up under 'policy' (with gradient) or 'reference'."""
    import torch

    from cocos.rl import passes

    spent: dict = {}
    plain = passes.sequence_logprobs

    def timed(*a, **kw):
        t = time.perf_counter()
        out = plain(*a, **kw)
        key = "policy" if torch.is_grad_enabled() else "reference"
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
        return out

    passes.sequence_logprobs = timed
    return spent


def print_token_counts(tr, trajs) -> None:
    """Tokens each way runs through the model for this step (what the timings should follow)."""
    from cocos.rl.batch import trained_sequences
    from cocos.rl.objective import method_at
    from cocos.rl.passes import common_prefix_length

    seqs = trained_sequences(trajs, method_at(tr.cfg, 0))
    mb = tr.cfg.micro_batch
    order = sorted(seqs, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))
    padded = sum(len(order[i:i + mb]) * max(len(s.prompt_ids) + len(s.completion_ids) for s in order[i:i + mb])
                 for i in range(0, len(order), mb))
    prefix = suffix = 0
    groups: dict = {}
    for s in seqs:
        groups.setdefault((s.traj // tr.cfg.k, s.turn), []).append(s)
    for batch in groups.values():
        n = common_prefix_length([s.prompt_ids for s in batch]) if len(batch) > 1 else 0
        n = n if n >= 2 else 0
        prefix += n
        suffix += len(batch) * max(len(s.prompt_ids) - n + len(s.completion_ids) for s in batch)
    real = sum(len(s.prompt_ids) + len(s.completion_ids) for s in seqs)
    print(f"tokens per pass: plain {padded} (padded micro-batches of {mb}; {real} real), shared-prefix "
          f"{prefix + suffix} ({prefix} prefix + {suffix} padded suffix); passes: plain 3 (1 with gradient), "
          f"shared-prefix 2 (1 with gradient); token-passes with gradient {padded} vs {prefix + suffix}, "
          f"without {2 * padded} vs {prefix + suffix}", flush=True)


def whole_steps(args) -> None:
    from cocos.rl.config import load_config
    from cocos.rl.trainer import Trainer

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
    for n in names[1:]:
        print(f"speed-up of {n!r} over {names[0]!r}: {results[names[0]] / results[n]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cocos_cpu.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override, repeatable")
    ap.add_argument("--repeats", type=int, default=1, help="update phase: timings per way (the best is kept)")
    ap.add_argument("--whole-steps", action="store_true", help="time whole steps of three trainer variants instead")
    ap.add_argument("--steps", type=int, default=2, help="--whole-steps: steps per variant")
    ap.add_argument("--only", action="append", default=None, help="--whole-steps: variants whose name contains this")
    args = ap.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}; config {args.config}; overrides {args.set or 'none'}", flush=True)
    (whole_steps if args.whole_steps else update_phase)(args)


if __name__ == "__main__":
    main()
