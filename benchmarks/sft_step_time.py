"""Seconds per SFT optimizer step (`cocos sft`, and the baselines' TRL fits), autocast none against bf16, one run:

    nice -n 10 python benchmarks/sft_step_time.py [--config configs/boost_sft.yaml] [--steps 4] [--set k=v ...]

The examples are built once; each way then trains `--steps` optimizer steps from the same weights, same seed, same
batches, and prints its seconds per step, its ratio against autocast none (float32 throughout, the fine-tunes before
the `autocast` field), its training losses, which should agree to about bf16's precision, and the largest weight
difference at the end (0 would mean autocast never engaged).

Measured 2026-11-28 (2-core EPYC with AVX512-BF16, one thread, both other cores busy with training runs):
    OMP_NUM_THREADS=1 python benchmarks/sft_step_time.py --steps 3 --set batch_size=2 --set grad_accum=2 --set warmup_ratio=0
    -> none 34.7 s per step, bf16 23.8 s: 1.46x; losses 0.4932 0.2106 0.4297 vs 0.4938 0.2247 0.4376; weights 2e-4 apart
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/boost_sft.yaml")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from dataclasses import replace

    import torch

    from cocos.finetune.config import load_sft_config
    from cocos.finetune.sft import make_trainer
    from cocos.finetune.sft_data import build_examples, drop_long, fits_within
    from cocos.generation.device import fast_bf16, sdpa_without_cudnn
    from cocos.generation.policy import load_policy

    cfg = load_sft_config(args.config, [f"max_rows={args.steps * 32}", *args.set, f"max_steps={args.steps}",
                                        "logging_steps=1", "save_steps=0", "progress=false"])
    policy = load_policy(cfg.model, dtype=cfg.dtype, backend="hf")
    examples, _ = build_examples(cfg, policy, fits_within(policy.tokenizer, cfg.max_length))
    examples, _ = drop_long(examples, policy.tokenizer, cfg.max_length)
    device = next(policy.model.parameters()).device
    print(f"{cfg.model}: {len(examples)} examples, batch {cfg.batch_size} x accumulation {cfg.grad_accum}, "
          f"{args.steps} optimizer steps, weights {cfg.dtype}, threads {os.environ.get('OMP_NUM_THREADS', 'all')}")
    rows, weights = {}, {}
    for autocast in ("none", "bf16"):
        if autocast == "bf16" and not fast_bf16(device):
            print("autocast bf16: skipped (bf16 is emulated on this hardware)")
            continue
        # a fresh copy each way: a model a trainer has prepared keeps that trainer's precision (accelerate wraps its
        # forward once), so a second trainer on the same object would silently run the first one's way
        model = copy.deepcopy(policy.model).train()
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(model, policy.tokenizer, examples, replace(cfg, autocast=autocast), Path(out))
            t = time.perf_counter()
            with sdpa_without_cudnn(device):
                trainer.train()
            sec = (time.perf_counter() - t) / args.steps
            losses = [float(r["loss"]) for r in trainer.state.log_history if "loss" in r]
        rows[autocast] = sec
        weights[autocast] = torch.cat([p.detach().flatten() for p in model.parameters()])
        print(f"  autocast {autocast:4s}: {sec:6.1f} s per step; losses "
              + " ".join(f"{x:.5f}" for x in losses), flush=True)
    if "bf16" in rows:
        print(f"bf16 autocast vs none: {rows['none'] / rows['bf16']:.2f}x; largest weight difference after the "
              f"{args.steps} steps: {float((weights['none'] - weights['bf16']).abs().max()):.2e}")


if __name__ == "__main__":
    main()
