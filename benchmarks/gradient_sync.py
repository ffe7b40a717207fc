"""Gradient reduction at the end of a step, 2 CPU processes (gloo), default model, both ways in one run:

    accelerate launch --multi_gpu --num_processes 2 benchmarks/gradient_sync.py [--set FIELD=VALUE ...] [--repeats 5]

- before: the trainer as it was, one `accelerator.reduce(grad, "mean")` per parameter tensor (272 collectives for
  SmolLM2-135M);
- after: the trainer's `dist.reduce_gradients` (cocos.rl.distributed), one synced backward of a zero loss on a
  1-token forward through the DDP-prepared model, whose bucketed all-reduce averages the gradients the step
  accumulated under no_sync.

Each rank starts from the same random gradients (seeded per rank) both ways; the script checks that both ways
give the same averaged gradients and prints each way's best time and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cocos_cpu.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    from cocos.rl.config import load_config
    from cocos.rl.trainer import Trainer

    cfg = load_config(args.config, [*args.set, "eval_limit=0", "save_every=0", "tensorboard=false", "curriculum_k=0"])
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, out, progress=False)
        if tr.world < 2:
            raise SystemExit("run it with: accelerate launch --multi_gpu --num_processes 2 benchmarks/gradient_sync.py")
        params = [p for p in tr.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(1234 + tr.rank)
        grads = [torch.randn(p.shape, generator=gen) for p in params]

        def before():
            for p, g in zip(params, grads):
                p.grad = tr.acc.reduce(g.clone(), reduction="mean")

        def after():
            with tr.dist.local_gradients():  # the step's backwards leave their gradients here
                for p, g in zip(params, grads):
                    p.grad = g.clone()
            tr.dist.reduce_gradients()

        results = {}
        for name, way in (("before: one reduce per tensor", before), ("after: one synced backward", after)):
            times = []
            for _ in range(args.repeats):
                tr.acc.wait_for_everyone()
                t = time.perf_counter()
                way()
                tr.acc.wait_for_everyone()
                times.append(time.perf_counter() - t)
            results[name] = (min(times), [p.grad.clone() for p in params])
            for p in params:
                p.grad = None
        (a, ga), (b, gb) = results.values()
        diff = max(float((x - y).abs().max()) for x, y in zip(ga, gb))
        if tr.is_main:
            print(f"{len(params)} parameter tensors, {sum(p.numel() for p in params) / 1e6:.0f} M values, "
                  f"{tr.world} processes, torch threads {torch.get_num_threads()}")
            for name, (sec, _) in results.items():
                print(f"  {name:32s} {sec * 1000:8.1f} ms (best of {args.repeats})")
            print(f"  speed-up {a / b:.2f}x; largest difference between the two averaged gradients {diff:.2e}")


if __name__ == "__main__":
    main()
