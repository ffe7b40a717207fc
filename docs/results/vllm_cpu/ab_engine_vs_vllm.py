"""A/B: the engine in bf16 vs vLLM's CPU build in bf16, alternating, two rounds, on both cases of
benchmarks/rollout_throughput.py (same prompts, same settings), without its slow HF rows.

    COCOS_DATA_DIR=../shared/data nice -n 10 .venv-vllm/bin/python docs/results/vllm_cpu/ab_engine_vs_vllm.py
"""
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    import torch

    from cocos.data.problems import load_problems
    from cocos.data.prompts import fewshot_prefix, load_fewshot_examples, paper_prompt
    from cocos.generation.backends.engine import Engine
    from cocos.generation.policy import Policy, load_policy
    from cocos.generation.sampling import Sampling
    policy = load_policy("smollm2-135m", dtype="float32", backend="hf", verbose=False)
    model, tok = policy.model, policy.tokenizer
    eng = Engine(model, tok, dtype="bfloat16", max_batch=64)
    vl = Policy(copy.deepcopy(model).to(torch.bfloat16), tok, backend="vllm")
    problems = load_problems("mbpp", split="test")
    p1 = [paper_prompt(p) for p in problems[:32]]
    shots = fewshot_prefix(load_fewshot_examples())
    p2 = [paper_prompt(p, fewshot=shots) for p in problems[:8]]
    dup = [p for p in p2 for _ in range(4)]
    kw = dict(max_new_tokens=128, temperature=0.9, top_p=1.0, seed=0)
    eng.generate(p1[:2], Sampling(max_new_tokens=4))
    vl.generate(p1[:2], max_new_tokens=4)

    def t(tag, fn):
        s = time.perf_counter()
        g = fn()
        d = time.perf_counter() - s
        n = sum(len(x.completion_ids) for x in g)
        print(f"{tag}: {n} tok {d:.1f} s {n / d:.0f} tok/s", flush=True)

    for r in range(2):
        t("case1 engine bf16", lambda: eng.generate(p1, Sampling(max_new_tokens=128)))
        t("case1 vLLM bf16", lambda: vl.generate(p1, max_new_tokens=128))
        t("case2 engine bf16", lambda: eng.generate(p2, Sampling(**kw), n=4))
        t("case2 vLLM bf16", lambda: vl.generate(dup, **kw))
    vl._backend_impl.close()


if __name__ == "__main__":
    main()
