"""Seconds per SFT optimizer step (`cocos sft`, and the baselines' TRL fits), autocast none against bf16, one run:

    nice -n 10 python benchmarks/sft_step_time.py [--config configs/boost_sft.yaml] [--steps 4] [--set k=v ...]

The examples are built once; each way then trains `--steps` optimizer steps from the same weights, same seed, same
batches, and prints its seconds per step, its ratio against autocast none (float32 throughout, the fine-tunes before
the `autocast` field), and its logged training losses, which should agree to about bf16's precision.
"""

from __future__ import annotations

import argparse
import copy
import json
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

    from cocos.device import fast_bf16, sdpa_without_cudnn
    from cocos.policy import load_policy
    from cocos.train.sft import build_examples, drop_long, fits_within, load_sft_config, make_trainer

    cfg = load_sft_config(args.config, [*args.set, f"max_steps={args.steps}", "logging_steps=1", "save_steps=0",
                                        "progress=false", "max_rows=" + str(args.steps * 16)])
    policy = load_policy(cfg.model, dtype=cfg.dtype, backend="hf")
    examples, _ = build_examples(cfg, policy, fits_within(policy.tokenizer, cfg.max_length))
    examples, _ = drop_long(examples, policy.tokenizer, cfg.max_length)
    start = copy.deepcopy(policy.model.state_dict())
    device = next(policy.model.parameters()).device
    print(f"{cfg.model}: {len(examples)} examples, batch {cfg.batch_size} x accumulation {cfg.grad_accum}, "
          f"{args.steps} optimizer steps, weights {cfg.dtype}, threads {os.environ.get('OMP_NUM_THREADS', 'all')}")
    rows = {}
    for autocast in ("none", "bf16"):
        if autocast == "bf16" and not fast_bf16(device):
            print("autocast bf16: skipped (bf16 is emulated on this hardware)")
            continue
        policy.model.load_state_dict(start)
        policy.model.train()
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(policy.model, policy.tokenizer, examples, replace(cfg, autocast=autocast), Path(out))
            t = time.perf_counter()
            with sdpa_without_cudnn(device):
                trainer.train()
            sec = (time.perf_counter() - t) / args.steps
            losses = [json.loads(line).get("loss") for line in open(Path(out) / "log.jsonl")]
        rows[autocast] = sec
        print(f"  autocast {autocast:4s}: {sec:6.1f} s per step; losses "
              + " ".join(f"{x:.4f}" for x in losses if x is not None), flush=True)
    if "bf16" in rows:
        print(f"bf16 autocast vs none: {rows['none'] / rows['bf16']:.2f}x")


if __name__ == "__main__":
    main()
