"""Memory and time of an RL step's policy pass with gradient, without and with gradient checkpointing:

    nice -n 10 python benchmarks/rl_step_memory.py [--model smollm2-135m] [--seqs 1] [--tokens 1024]

The pass the trainer runs under logprob_passes=plain (cocos.train.objective.token_logprobs, then the backward of a
policy-gradient loss) on `--seqs` sequences of `--tokens` tokens (the last half of them completion), under bf16
autocast where the CPU has fast bf16. Each variant runs in its own process; the peak resident memory (VmHWM, reset
after loading the model) minus the memory after loading is the pass's. Printed: that peak and the pass's time, both
as ratios against the first variant in the same run, and each variant's largest gradient difference from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset VmHWM to the current RSS (Linux)
        f.write("5")


def one(args) -> None:
    import torch

    from cocos.device import bf16_autocast
    from cocos.policy import load_policy
    from cocos.train.objective import token_logprobs

    torch.manual_seed(0)
    model = load_policy(args.model, backend="hf", verbose=False).model.train()
    if args.checkpointing:
        model.activation_checkpointing_enable() if hasattr(model, "activation_checkpointing_enable") else \
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(100, model.config.vocab_size - 100, (args.seqs, args.tokens))
    attn = torch.ones_like(ids)
    pos = torch.arange(args.tokens).expand(args.seqs, -1)
    n_completion = args.tokens // 2
    use_bf16 = bf16_autocast("auto", torch.device("cpu"))
    reset_peak()  # the peak of loading the model is not the pass's
    base = status_mb("VmRSS")
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
        logp, _ = token_logprobs(model, ids, attn, pos, n_completion, temperature=0.9)
    (-logp.sum(-1).mean()).backward()
    seconds = time.perf_counter() - t
    peak = status_mb("VmHWM")
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    torch.save(grads, args.grads)
    print(json.dumps({"extra_mb": peak - base, "seconds": seconds, "bf16": use_bf16,
                      "layers": model.config.num_hidden_layers}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seqs", type=int, default=1)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)  # one variant (a child process)
    p.add_argument("--grads", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.grads:
        return one(args)
    import tempfile

    import torch

    variants = {"plain": [], "gradient_checkpointing": ["--checkpointing"]}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(variants.items()):
            cmd = [sys.executable, __file__, "--model", args.model, "--seqs", str(args.seqs), "--tokens",
                   str(args.tokens), "--grads", f"{tmp}/{i}.pt", *flags]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res[name] = json.loads(out)
            res[name]["diff"] = float((torch.load(f"{tmp}/0.pt") - torch.load(f"{tmp}/{i}.pt")).abs().max())
    first = next(iter(res.values()))
    print(f"{args.model}: {first['layers']} layers, {args.seqs} x {args.tokens} tokens, bf16 autocast {first['bf16']}")
    for name, r in res.items():
        print(f"  {name:24s} peak over the loaded model {r['extra_mb']:6.0f} MB ({r['extra_mb'] / first['extra_mb']:.2f}x)"
              f"   {r['seconds']:6.2f} s ({r['seconds'] / first['seconds']:.2f}x)   gradient difference {r['diff']:.1e}")


if __name__ == "__main__":
    main()
