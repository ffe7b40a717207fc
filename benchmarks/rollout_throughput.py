"""Rollout throughput: HF `generate` (float32, bfloat16) vs the rollout engine (cocos.generation.backends.engine) vs
vLLM, in one run.

    nice -n 10 python benchmarks/rollout_throughput.py [--model smollm2-135m] [--prompts 32] [--max-new-tokens 128]
        [--threads N] [--k 4] [--k-prompts 8] [--skip-hf-fp32-k] [--device cuda] [--vllm-dtypes float32,bfloat16]

Case 1 ("greedy"): the first `--prompts` MBPP test problems in the paper's prompt format, greedy, stop at
[DONE], `--max-new-tokens` each, HF generate in one batch of all prompts (the policy's HF backend) vs the engine.
Also checks greedy equality: engine float32 vs HF float32, engine bfloat16 vs HF bfloat16, sequence by sequence.
Case 2 ("k samples"): `--k-prompts` problems with the 3-shot prefix, k samples each at temperature 0.9 (the
paper's RL sampling), one generate call with n=k per backend: HF generate on the k copies of each prompt in one
batch vs the engine (which prefills each prompt once, shares its KV cache among the k samples, and reuses the
few-shot prefix across prompts) vs vLLM (SamplingParams.n = k).

Tokens/s counts generated tokens up to and including each sequence's stop (padding after a stop is not counted).
Ratios within one run are what count: other processes share this machine.
With `--device cuda` only HF generate runs (float32 and bfloat16 on the GPU): the engine is CPU-only.

vLLM rows (the policy's `backend="vllm"`, prefix caching on) run when vllm imports, i.e. from the .venv-vllm environment
(README, "vLLM"); vLLM's CPU threads are set by cocos.generation.backends.vllm as vLLM's CPU documentation advises (or
by VLLM_CPU_OMP_THREADS_BIND). They also time `sync_weights()` (the push of the live weights after each optimizer step)
and check greedy equality against HF generate in the same dtype. The script needs its `if __name__ == "__main__":`
guard: vLLM spawns its engine process.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from cocos.data.problems import load_problems  # noqa: E402
from cocos.data.prompts import fewshot_prefix, load_fewshot_examples, paper_prompt  # noqa: E402
from cocos.generation.backends.engine import Engine  # noqa: E402
from cocos.generation.policy import Policy, load_policy  # noqa: E402
from cocos.generation.sampling import Sampling  # noqa: E402

try:  # vLLM rows only where it is installed (the .venv-vllm environment)
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False


def timed(fn):
    t = time.perf_counter()
    gens = fn()
    dt = time.perf_counter() - t
    n = sum(len(g.completion_ids) for g in gens)
    return gens, n, dt


def same(a, b):
    """Sequences with identical completion ids, and the index of the first difference of the others."""
    equal = sum(x.completion_ids == y.completion_ids for x, y in zip(a, b))
    firsts = []
    for x, y in zip(a, b):
        if x.completion_ids != y.completion_ids:
            firsts.append(next((i for i, (p, q) in enumerate(zip(x.completion_ids, y.completion_ids)) if p != q),
                               min(len(x.completion_ids), len(y.completion_ids))))
    return equal, firsts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--max-batch", type=int, default=64, help="engine: concurrent sequences")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--k-prompts", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.9, help="case 2 sampling temperature")
    ap.add_argument("--skip-hf-fp32-k", action="store_true", help="case 2: skip the slow HF float32 run")
    ap.add_argument("--only", choices=["greedy", "k"], default=None)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: HF generate on a GPU (no engine there)")
    ap.add_argument("--vllm-dtypes", default="float32,bfloat16",
                    help="vLLM rows, when vllm imports (comma-separated; 'none' to skip)")
    ap.add_argument("--vllm-syncs", type=int, default=3, help="weight pushes timed per vLLM row")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.model, dtype="float32", backend="hf", device=args.device)
    model, tok = policy.model, policy.tokenizer
    model.eval()
    on_cpu = policy.device.type == "cpu"
    where = (f"CPU, torch threads {torch.get_num_threads()}, bf16 matmul support "
             f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}" if on_cpu else torch.cuda.get_device_name(policy.device))
    print(f"torch {torch.__version__}; {where}" + ("" if on_cpu else "; the engine is CPU-only: HF generate alone"))
    hf32 = policy
    hf16 = Policy(copy.deepcopy(model).to(torch.bfloat16), tok, backend="hf")
    engines = ([("engine float32", Engine(model, tok, max_batch=args.max_batch)),
                ("engine bfloat16", Engine(model, tok, dtype="bfloat16", max_batch=args.max_batch))] if on_cpu else [])
    vllms = []  # (name, Policy with backend vllm): float32 shares `model` (its weights are what sync pushes)
    wanted = [d for d in args.vllm_dtypes.split(",") if d and d != "none"]
    if HAVE_VLLM and wanted:
        for d in wanted:
            src = model if d == "float32" else copy.deepcopy(model).to(getattr(torch, d))
            t = time.perf_counter()
            vllms.append((f"vLLM {d}", Policy(src, tok, backend="vllm")))
            print(f"vLLM {d}: engine started in {time.perf_counter() - t:.0f} s; VLLM_CPU_OMP_THREADS_BIND="
                  f"{os.environ.get('VLLM_CPU_OMP_THREADS_BIND')}, VLLM_CPU_KVCACHE_SPACE="
                  f"{os.environ.get('VLLM_CPU_KVCACHE_SPACE')} GiB, vllm {vllm.__version__}", flush=True)
    elif wanted:
        print("vLLM rows skipped: vllm does not import here (run from .venv-vllm; README)")
    problems = load_problems("mbpp", split="test")
    N = args.max_new_tokens

    warm = [paper_prompt(problems[0])] * 2
    for gen in (hf32.generate, hf16.generate, *(v.generate for _, v in vllms)):
        gen(warm, Sampling(max_new_tokens=4))
    for _, eng in engines:
        eng.generate(warm, Sampling(max_new_tokens=4))

    rows = []

    def report(case, name, n, dt, base32, base16):
        rows.append((case, name, n, dt))
        r32 = f"{(n / dt) / base32:5.2f}x" if base32 else "   - "
        r16 = f"{(n / dt) / base16:5.2f}x" if base16 else "   - "
        print(f"  {name:<28} {n:6d} tok {dt:8.1f} s {n / dt:8.1f} tok/s   vs HF fp32 {r32}   vs HF bf16 {r16}",
              flush=True)

    if args.only in (None, "greedy"):
        prompts = [paper_prompt(p) for p in problems[: args.prompts]]
        B = len(prompts)
        print(f"\ncase 1: {B} MBPP prompts (paper format), greedy, {N} new tokens, stop [DONE]; HF batch {B}")
        h32, n, dt = timed(lambda: hf32.generate(prompts, Sampling(max_new_tokens=N), batch_size=B))
        base32 = n / dt
        report("greedy", "HF generate float32", n, dt, base32, None)
        h16, n, dt = timed(lambda: hf16.generate(prompts, Sampling(max_new_tokens=N), batch_size=B))
        base16 = n / dt
        report("greedy", "HF generate bfloat16", n, dt, base32, base16)
        outs = {}
        for name, eng in engines:
            outs[name], n, dt = timed(lambda: eng.generate(prompts, Sampling(max_new_tokens=N)))
            report("greedy", name, n, dt, base32, base16)
        for name, pol in vllms:
            outs[name], n, dt = timed(lambda: pol.generate(prompts, Sampling(max_new_tokens=N)))
            report("greedy", name, n, dt, base32, base16)
        for name, gens in outs.items():
            eq, firsts = same(gens, h32 if "float32" in name else h16)
            print(f"  greedy equality {name}: {eq}/{B} sequences identical to HF generate in its dtype"
                  + (f" (others first differ at token {sorted(firsts)})" if firsts else ""))
        if engines:
            eq, _ = same(outs["engine bfloat16"], h32)
            print(f"  (engine bfloat16 vs HF float32: {eq}/{B} identical)")
        else:
            eq, _ = same(h16, h32)
            print(f"  (HF bfloat16 vs HF float32: {eq}/{B} identical)")

    if args.only in (None, "k"):
        shots = fewshot_prefix(load_fewshot_examples())
        prompts = [paper_prompt(p, fewshot=shots) for p in problems[: args.k_prompts]]
        B = len(prompts) * args.k
        lens = [len(policy.encode_prompt(p)) for p in prompts]
        print(f"\ncase 2: {len(prompts)} MBPP prompts with the 3-shot prefix ({min(lens)}-{max(lens)} tokens) x "
              f"k={args.k} samples, temperature {args.temperature}, {N} new tokens; HF batch {B}")
        kw = dict(max_new_tokens=N, temperature=args.temperature, top_p=1.0, seed=0)
        base32 = None
        if not args.skip_hf_fp32_k:
            _, n, dt = timed(lambda: hf32.generate(prompts, Sampling(**kw), n=args.k, batch_size=B))
            base32 = n / dt
            report("k", "HF generate float32", n, dt, base32, None)
        _, n, dt = timed(lambda: hf16.generate(prompts, Sampling(**kw), n=args.k, batch_size=B))
        base16 = n / dt
        report("k", "HF generate bfloat16", n, dt, base32, base16)
        for name, eng in engines:
            _, n, dt = timed(lambda: eng.generate(prompts, Sampling(**kw), n=args.k))
            report("k", name, n, dt, base32, base16)
            s = eng.stats
            print(f"    prefill: {s['prefills']} prompts, {s['prefill_tokens']} tokens computed, "
                  f"{s['cached_tokens']} reused from a shared prefix; {s['steps']} decode steps, "
                  f"up to {s['max_rows']} rows")
        for name, pol in vllms:  # n=k: one request per prompt, its k samples share the prompt's KV blocks
            _, n, dt = timed(lambda: pol.generate(prompts, Sampling(**kw), n=args.k))
            report("k", name, n, dt, base32, base16)

    for name, pol in vllms:
        for _ in range(args.vllm_syncs):
            pol.sync_weights()
        secs = pol._backend_impl.sync_seconds
        if secs:
            print(f"\n{name}: sync_weights (push of the live weights after an optimizer step) "
                  f"{sum(secs) / len(secs):.2f} s mean over {len(secs)} ({', '.join(f'{x:.2f}' for x in secs)})")
        pol._backend_impl.close()


if __name__ == "__main__":
    main()
