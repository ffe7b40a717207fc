"""Memory and time of an RL step's policy pass with gradient over one group of k samples, by the way it runs
(logprob_passes plain / shared-prefix) and without / with gradient checkpointing:

    nice -n 10 python benchmarks/rl_step_memory.py [--model smollm2-135m] [--k 4] [--prompt 256] [--completion 128]

The group: k sequences with one prompt of `--prompt` tokens and their own completions of `--completion` tokens,
through cocos.rl.passes.sequence_logprobs (what both passes call per batch) and the backward of a
policy-gradient loss, under bf16 autocast where the CPU has fast bf16. Each variant runs in its own process; the
peak resident memory (VmHWM, reset after loading the model) minus the memory after loading is the pass's. Printed:
that peak and the pass's time, both as ratios against the first variant (plain, no checkpointing) in the same run,
and the L2 norm of each variant's gradient difference from it over that of its gradient (bf16 autocast
rounds differently when the prefix runs once: ~1e-2; under --no-autocast, ~1e-7).
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

VARIANTS = {  # name: (share_prefix, gradient checkpointing)
    "plain": (False, False),
    "plain + checkpointing": (False, True),
    "shared-prefix": (True, False),
    "shared-prefix + checkpointing": (True, True),
}


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset VmHWM to the current RSS (Linux)
        f.write("5")


def one(args) -> None:
    import torch

    from cocos.generation.device import bf16_autocast
    from cocos.generation.policy import load_policy
    from cocos.rl.passes import allow_checkpointing_with_prefix, sequence_logprobs

    share, checkpointing = VARIANTS[args.variant]
    torch.manual_seed(0)
    model = load_policy(args.model, backend="hf", verbose=False).model.train()
    if checkpointing:
        model.activation_checkpointing_enable() if hasattr(model, "activation_checkpointing_enable") else \
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if share:
            assert allow_checkpointing_with_prefix(model)
    V = model.config.vocab_size
    prompt = torch.randint(100, V - 100, (args.prompt,)).tolist()
    completions = torch.randint(100, V - 100, (args.k, args.completion)).tolist()
    use_bf16 = bf16_autocast("none" if args.no_autocast else "auto", torch.device("cpu"))
    reset_peak()  # the peak of loading the model is not the pass's
    base = status_mb("VmRSS")
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
        logp, _, mask = sequence_logprobs(model, [prompt] * args.k, completions, 0, "cpu", temperature=0.9,
                                          share_prefix=share)
    (-(logp * mask).sum(-1).mean()).backward()
    seconds = time.perf_counter() - t
    peak = status_mb("VmHWM")
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    torch.save(grads, args.grads)
    print(json.dumps({"extra_mb": peak - base, "seconds": seconds, "bf16": use_bf16,
                      "layers": model.config.num_hidden_layers}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--completion", type=int, default=128)
    p.add_argument("--no-autocast", action="store_true", help="float32 throughout")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one variant (a child process)
    p.add_argument("--grads", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.grads:
        return one(args)
    import tempfile

    import torch

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(VARIANTS):
            cmd = [sys.executable, __file__, "--model", args.model, "--k", str(args.k), "--prompt", str(args.prompt),
                   "--completion", str(args.completion), "--variant", name, "--grads", f"{tmp}/{i}.pt",
                   *(["--no-autocast"] if args.no_autocast else [])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res[name] = json.loads(out)
            ref, got = torch.load(f"{tmp}/0.pt"), torch.load(f"{tmp}/{i}.pt")
            res[name]["diff"] = float((ref - got).norm() / ref.norm())
    first = next(iter(res.values()))
    print(f"{args.model}: {first['layers']} layers; a group of {args.k} x ({args.prompt} prompt + {args.completion} "
          f"completion) tokens; bf16 autocast {first['bf16']}")
    for name, r in res.items():
        print(f"  {name:30s} peak over the loaded model {r['extra_mb']:6.0f} MB ({r['extra_mb'] / first['extra_mb']:.2f}x)"
              f"   {r['seconds']:6.2f} s ({r['seconds'] / first['seconds']:.2f}x)   gradient difference {r['diff']:.1e} (relative, L2)")


if __name__ == "__main__":
    main()
