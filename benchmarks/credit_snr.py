"""Signal-to-noise ratio of the turn-2 gradient under `advantage: rloo` and `advantage: per-turn`, on the same rollouts:

    python benchmarks/credit_snr.py [--model smollm2-135m] [--groups 24] [--k 4] [--max-new-tokens 192]
        [--gammas 0.5,2] [--fewshot] [--seed 0] [--dataset mbpp --split train] [--project 0]

What it does (docs/credit.md has the two estimators):

1. Samples G = --groups problems of the split (shuffled by --seed) and k trajectories of T = 2 turns each with the
   policy (cocos.episodes.rollout.run_episodes: trajectory mode, temperature 0.9, the paper prompt format, --fewshot for a
   base model, progressive rewards from the sandbox). Sampling runs in the weights' own dtype (float32), so the
   samples come from exactly the policy whose gradient is taken.
2. Keeps the groups whose k x T rewards are not all equal (the trainer's uniform-group test): in the others every
   advantage is 0 under both estimators apart from KL terms, and here the KL is 0 (next point). The count of dropped
   groups is printed.
3. Advantages from the same rewards, per gamma in --gammas and per estimator, by cocos.rl.objective.advantages
   with beta = 0.01 and the KL against a reference that is the same model: before any update the policy is its
   reference, so every KL_t is exactly 0 (turn_kl is passed as zeros; no reference pass is run). Under per-turn,
   turn 2's advantage is then gamma-free: G_2 = r_2 - r_1.
4. Per sample i of a kept group, its turn-2 gradient v_i = grad sum_tokens log pi_T(y_i,2 | turn-2 prompt), with
   pi_T = softmax(logits / 0.9) (objective.token_logprobs via cocos.rl.passes.sequence_logprobs), flattened over
   the trainable parameters, float32, computed once and shared by every (estimator, gamma). A sample whose turn-2
   advantage is 0 under every estimator is not differentiated (it weighs nothing). Only the group's k vectors are
   held; the group's turn-2 component of each estimator is g = sum_i A_i,2 v_i / k.
5. Running sums over groups, per (estimator, gamma): sum of g (a vector) and sum of ||g||^2; per group the dot
   products between the estimators' g (from the k x k Gram matrix of the v_i). Estimators whose turn-2 advantages
   are identical in every kept group share one running sum. With --project M > 0 every v_i is first mapped to M
   dimensions by a fixed count sketch (a random sign and bucket per coordinate: a random projection that keeps norms
   and dot products in expectation), for machines short of memory; 0 (default) keeps the exact vectors.

Printed per gamma and estimator: RMS of A_i,2 over the kept samples, ||mean g|| (the signal's estimate), the
standard error SE = sqrt(mean_g ||g - mean g||^2 / G), SNR = ||mean g|| / SE, and the per-turn / rloo ratios; the
per-group cosine between the two estimators' g; the cosine between their means.

Reading it. Both estimators have the same expectation (docs/credit.md), so they differ in noise only. With far
more parameters than groups, ||mean g||^2 carries the noise trace / G: for a true mean of 0 the SNR is about
sqrt(G / (G - 1)), not 0. So the table also prints a debiased SNR, sqrt(max(0, ||mean g||^2 - s^2 / G)) / (s / sqrt(G))
with s^2 = sum_g ||g - mean g||^2 / (G - 1) (||mean g||^2 - s^2 / G is unbiased for ||E g||^2), and the SE ratio,
the paired comparison of the noise alone.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ESTIMATORS = ("rloo", "per-turn")
TEMPERATURE = 0.9
BETA = 0.01


# ---- the statistics: running sums over groups ------------------------------------------------------
class GroupSums:
    """Running sums over groups of several estimators' gradient components g_e = sum_i A_e,i v_i / k.

    add(V [k, D], A [E, k]) for each group; result() -> the statistics of each estimator and, per pair of
    estimators, their per-group cosines. Holds one [E, D] float32 sum and float64 scalars.
    """

    def __init__(self, n_estimators: int, dim: int):
        self.sum = torch.zeros(n_estimators, dim, dtype=torch.float32)
        self.sq = torch.zeros(n_estimators, dtype=torch.float64)  # sum over groups of ||g_e||^2
        self.dots: list[torch.Tensor] = []  # per group, [E, E]: g_a . g_b
        self.n = 0

    def add(self, V: torch.Tensor, A: torch.Tensor) -> None:
        k = V.shape[0]
        W = A.to(torch.float64) / k  # [E, k]
        gram = (V @ V.T).to(torch.float64)  # [k, k]: v_i . v_j
        C = W @ gram @ W.T  # [E, E]: g_a . g_b
        self.sum.addmm_(W.to(torch.float32), V)  # sum[e] += g_e
        self.sq += C.diagonal()
        self.dots.append(C)
        self.n += 1

    def result(self) -> dict:
        G, E = self.n, self.sum.shape[0]
        sums = [[dot64(self.sum[a], self.sum[b]) for b in range(E)] for a in range(E)]  # sum_a . sum_b
        est = []
        for e in range(E):
            mean_sq = sums[e][e] / G**2  # ||mean g||^2
            var = max(0.0, float(self.sq[e]) / G - mean_sq)  # mean_g ||g - mean g||^2
            se = math.sqrt(var / G) if G > 1 else float("nan")  # one group: no spread to measure
            s2 = var * G / (G - 1) if G > 1 else float("nan")  # sum_g ||g - mean g||^2 / (G - 1)
            debiased = math.sqrt(max(0.0, mean_sq - s2 / G)) / math.sqrt(s2 / G) if G > 1 and s2 > 0 else float("nan")
            snr = math.sqrt(mean_sq) / se if se > 0 else float("nan")
            est.append({"signal": math.sqrt(mean_sq), "se": se, "snr": snr, "snr_debiased": debiased,
                        "mean_sq_norm": float(self.sq[e]) / G})
        pairs = {}
        for a in range(E):
            for b in range(a + 1, E):
                cos = [float(C[a, b] / math.sqrt(C[a, a] * C[b, b])) for C in self.dots if C[a, a] > 0 and C[b, b] > 0]
                norms = math.sqrt(sums[a][a] * sums[b][b])
                pairs[a, b] = {"cos": cos, "zero": G - len(cos),
                               "cos_of_means": sums[a][b] / norms if norms > 0 else float("nan")}
        return {"groups": G, "estimators": est, "pairs": pairs}


def dot64(x: torch.Tensor, y: torch.Tensor, chunk: int = 1 << 22) -> float:
    """x . y accumulated in float64, a chunk at a time (no full-length float64 copy)."""
    return sum(float(torch.dot(a.double(), b.double())) for a, b in zip(x.split(chunk), y.split(chunk)))


# ---- per-sample gradients -------------------------------------------------------------------------
class CountSketch:
    """A fixed random projection R^D -> R^M: coordinate j goes to bucket h(j) with sign s(j) (both drawn from a
    generator seeded per parameter, so every call maps the same way). E||Sx||^2 = ||x||^2, E[Sx . Sy] = x . y."""

    def __init__(self, dim: int, seed: int = 0):
        self.dim, self.seed = dim, seed

    def __call__(self, grads: list[torch.Tensor], out: torch.Tensor) -> None:
        out.zero_()
        for n, g in enumerate(grads):
            flat = g.reshape(-1).float()
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + n)
            for chunk in flat.split(1 << 22):
                bucket = torch.randint(self.dim, (chunk.numel(),), generator=gen)
                sign = torch.randint(2, (chunk.numel(),), generator=gen, dtype=torch.int8).float() * 2 - 1
                out.index_add_(0, bucket, chunk * sign)


def turn_gradient(model, params, prompt_ids, completion_ids, pad_id, out: torch.Tensor, *, temperature: float,
                  sketch: CountSketch | None = None) -> int:
    """out <- grad of sum_tokens log pi_T(completion | prompt), flattened over `params` (or its count sketch);
    -> the completion's token count. pi_T is objective.token_logprobs' (through passes.sequence_logprobs)."""
    from cocos.rl.objective import masked_sum
    from cocos.rl.passes import sequence_logprobs

    if not completion_ids:
        out.zero_()
        return 0
    device = params[0].device
    model.zero_grad(set_to_none=True)
    logp, _, mask = sequence_logprobs(model, [prompt_ids], [completion_ids], pad_id, device,
                                      temperature=temperature, share_prefix=False)
    masked_sum(logp, mask).sum().backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if sketch is not None:
        sketch(grads, out)
    else:
        off = 0
        for g in grads:
            out[off:off + g.numel()].copy_(g.reshape(-1))
            off += g.numel()
    model.zero_grad(set_to_none=True)
    return len(completion_ids)


# ---- the measurement ------------------------------------------------------------------------------
def turn2_advantages(rewards: torch.Tensor, k: int, gammas) -> dict:
    """rewards [N, 2] (N = P*k, grouped by problem) -> {(estimator, gamma): A_i,2 [N]} with beta = 0.01 and KL 0."""
    from cocos.rl.config import TrainConfig
    from cocos.rl.objective import advantages, method_at

    out = {}
    kl = torch.zeros_like(rewards)  # reference = the policy itself, before any update: KL_t = 0
    for gamma in gammas:
        method = method_at(TrainConfig(gamma=gamma, turns=2, beta=BETA, mode="trajectory"), step=0)
        for name in ESTIMATORS:
            out[name, gamma] = advantages(name, rewards, kl, method, k)[:, 1]
    return out


def measure(policy, problems, *, k: int = 4, gammas=(0.5, 2.0), max_new_tokens: int = 192, fewshot: bool = False,
            seed: int = 0, project: int = 0, temperature: float = TEMPERATURE, reward: str = "progressive",
            progress: bool = False, log=print) -> dict:
    """Roll out k trajectories of 2 turns per problem, then the turn-2 gradient statistics of both estimators at
    every gamma (see the module docstring). -> a dict: "rows" {(estimator, gamma): statistics}, "cos" {gamma: per-
    group cosines}, "budget" (counts and times)."""
    from cocos.episodes.rollout import run_episodes

    model = policy.model
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        trajs = run_episodes(policy, problems, samples_per_problem=k, seed=seed, progress=progress, turns=2,
                             mode="trajectory", temperature=temperature, max_new_tokens=max_new_tokens,
                             fewshot=fewshot, reward=reward, prompt_format="paper")
    t_rollout = time.perf_counter() - t0
    rewards = torch.tensor([t.rewards for t in trajs], dtype=torch.float32)  # [P*k, 2]
    P = len(problems)
    grouped = rewards.view(P, k, 2)
    kept = (grouped != grouped[:, :1]).flatten(1).any(-1)  # the trainer's uniform-group test
    keep_idx = [p for p in range(P) if kept[p]]
    adv = turn2_advantages(rewards, k, gammas)
    keys = list(adv)
    # estimators whose turn-2 advantages agree on every kept sample share one running sum
    rows = torch.tensor([i for p in keep_idx for i in range(p * k, (p + 1) * k)], dtype=torch.long)
    canon: dict = {}
    uniq: list = []
    for key in keys:
        match = next((u for u in uniq if torch.equal(adv[u][rows], adv[key][rows])), None)
        if match is None:
            uniq.append(key)
            match = key
        canon[key] = uniq.index(match)
    log(f"credit_snr: {len(trajs)} trajectories in {t_rollout:.0f} s; {len(keep_idx)} of {P} groups kept "
        f"({P - len(keep_idx)} with all rewards equal dropped); {len(uniq)} distinct estimators of {len(keys)}")

    params = [p for p in model.parameters() if p.requires_grad]
    D = sum(p.numel() for p in params)
    dim = project if project > 0 else D
    sketch = CountSketch(project, seed) if project > 0 else None
    sums = GroupSums(len(uniq), dim)
    V = torch.zeros(k, dim, dtype=torch.float32)
    A_all = torch.stack([adv[u] for u in uniq])  # [E, N]
    pad_id = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else 0
    t1 = time.perf_counter()
    n_grad = n_tok = 0
    model.train()
    for gi, p in enumerate(keep_idx):
        A = A_all[:, p * k:(p + 1) * k]
        for i in range(k):
            turn = trajs[p * k + i].turns[1]
            if not bool((A[:, i] != 0).any()):
                V[i].zero_()  # weighs nothing in any estimator
                continue
            n_tok += turn_gradient(model, params, turn.prompt_ids, turn.completion_ids, pad_id, V[i],
                                   temperature=temperature, sketch=sketch)
            n_grad += 1
        sums.add(V, A)
        if progress:
            log(f"  group {gi + 1}/{len(keep_idx)}: {time.perf_counter() - t1:.0f} s")
    model.eval()
    t_grad = time.perf_counter() - t1
    res = sums.result() if keep_idx else None

    out_rows, cos = {}, {}
    for key in keys:
        e = canon[key]
        a = adv[key][rows]
        stats = dict(res["estimators"][e]) if res else {}
        stats["rms_adv"] = float(a.pow(2).mean().sqrt()) if len(rows) else float("nan")
        out_rows[key] = stats
    for gamma in gammas:
        a, b = sorted((canon["rloo", gamma], canon["per-turn", gamma]))
        if res is None:
            cos[gamma] = {"cos": [], "zero": 0, "cos_of_means": float("nan")}
        elif a == b:  # identical advantages: cosine 1 wherever g != 0
            cos[gamma] = {"cos": [1.0] * len(keep_idx), "zero": 0, "cos_of_means": 1.0}
        else:
            cos[gamma] = res["pairs"][a, b]
    gen1 = sum(len(t.turns[0].completion_ids) for t in trajs)
    gen2 = sum(len(t.turns[1].completion_ids) for t in trajs)
    prompt2 = [len(trajs[i].turns[1].prompt_ids) for i in rows.tolist()]
    budget = {"problems": P, "kept": len(keep_idx), "dropped": P - len(keep_idx), "k": k, "dim": D,
              "projected": project, "tokens_turn1": gen1, "tokens_turn2": gen2, "grad_samples": n_grad,
              "grad_tokens": n_tok, "mean_prompt2": sum(prompt2) / len(prompt2) if prompt2 else 0.0,
              "rollout_s": t_rollout, "grad_s": t_grad, "distinct": len(uniq),
              "acc1": float((rewards[:, 0] == 1).float().mean()), "acc2": float((rewards[:, 1] == 1).float().mean()),
              "mean_r1": float(rewards[:, 0].mean()), "mean_r2": float(rewards[:, 1].mean())}
    return {"rows": out_rows, "cos": cos, "budget": budget}


def fmt_table(res: dict, gammas) -> str:
    b = res["budget"]
    G = b["kept"]
    lines = [] if G > 1 else [f"SE and SNR need at least 2 kept groups (G = {G}): only the RMS, the norm of g "
                              "and the cosines below mean anything", ""]
    lines += [f"turn-2 gradient component over G = {G} kept groups (noise floor of SNR for a zero mean: "
             f"sqrt(G/(G-1)) = {math.sqrt(G / (G - 1)) if G > 1 else float('nan'):.3f})", "",
             "| gamma | estimator | RMS A_i,2 | norm of mean g | SE | SNR | debiased SNR |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for gamma in gammas:
        r, p = res["rows"]["rloo", gamma], res["rows"]["per-turn", gamma]
        for name, s in (("rloo", r), ("per-turn", p)):
            lines.append(f"| {gamma:g} | {name} | {s['rms_adv']:.4f} | {s.get('signal', float('nan')):.4g} | "
                         f"{s.get('se', float('nan')):.4g} | {s.get('snr', float('nan')):.3f} | "
                         f"{s.get('snr_debiased', float('nan')):.3f} |")

        def ratio(key):
            x, y = p.get(key, float("nan")), r.get(key, float("nan"))
            return x / y if y and not math.isnan(y) else float("nan")

        lines.append(f"| {gamma:g} | per-turn / rloo | {ratio('rms_adv'):.3f} | {ratio('signal'):.3f} | "
                     f"{ratio('se'):.3f} | {ratio('snr'):.3f} | {ratio('snr_debiased'):.3f} |")
    lines += ["", "per-group cosine between the rloo and per-turn g (groups where both are nonzero):", ""]
    for gamma in gammas:
        c = res["cos"][gamma]
        xs = sorted(c["cos"])
        if xs:
            med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
            lines.append(f"  gamma {gamma:g}: mean {sum(xs) / len(xs):.3f}, median {med:.3f}, min {xs[0]:.3f}, "
                         f"max {xs[-1]:.3f} over {len(xs)} groups ({c['zero']} with a zero g); "
                         f"cosine of the two mean g: {c['cos_of_means']:.3f}")
        else:
            lines.append(f"  gamma {gamma:g}: no group with both g nonzero")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="named model or checkpoint folder")
    ap.add_argument("--groups", type=int, default=24, help="problems sampled (groups before the uniform-group drop)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--gammas", default="0.5,2")
    ap.add_argument("--fewshot", action="store_true", help="the few-shot prefix before turn 1 (for a base model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mbpp")
    ap.add_argument("--split", default="train")
    ap.add_argument("--project", type=int, default=0,
                    help="count-sketch the per-sample gradients to this many dimensions (0: exact vectors)")
    args = ap.parse_args(argv)
    gammas = tuple(float(g) for g in args.gammas.split(","))

    from cocos.generation.policy import load_policy
    from cocos.data.problems import load_problems

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    problems = load_problems(args.dataset, args.split)
    random.Random(args.seed).shuffle(problems)
    problems = problems[:args.groups]
    policy = load_policy(args.model, dtype="float32", backend="auto", rollout_dtype="model", verbose=False)
    print(f"credit_snr: {policy.describe()}", flush=True)
    res = measure(policy, problems, k=args.k, gammas=gammas, max_new_tokens=args.max_new_tokens,
                  fewshot=args.fewshot, seed=args.seed, project=args.project, progress=True,
                  log=lambda m: print(m, flush=True))
    b = res["budget"]
    total = time.perf_counter() - t0
    print()
    print(f"model {args.model}; {args.dataset} {args.split}, {b['problems']} problems (seed {args.seed} shuffle), "
          f"k = {b['k']}, T = 2, trajectory mode, temperature {TEMPERATURE}, {args.max_new_tokens} new tokens per "
          f"turn, {'3-shot' if args.fewshot else 'zero-shot'} paper prompts, progressive reward; beta {BETA} with "
          f"KL = 0 (reference = the policy, no update); float32 sampling and gradients")
    print(f"groups: {b['kept']} kept, {b['dropped']} dropped (all k x 2 rewards equal); mean r_1 {b['mean_r1']:.3f}, "
          f"mean r_2 {b['mean_r2']:.3f}, all tests pass at turn 1 {b['acc1']:.3f}, turn 2 {b['acc2']:.3f}")
    print(f"tokens generated: turn 1 {b['tokens_turn1']}, turn 2 {b['tokens_turn2']}; per-sample turn-2 gradients: "
          f"{b['grad_samples']} ({b['grad_tokens']} completion tokens, mean turn-2 prompt {b['mean_prompt2']:.0f} "
          f"tokens), over {b['dim']:,} trainable parameters"
          + (f", count-sketched to {b['projected']}" if b["projected"] else ", exact (no projection)"))
    print(f"time: rollout {b['rollout_s']:.0f} s, gradients {b['grad_s']:.0f} s, total {total:.0f} s; "
          f"{b['distinct']} distinct turn-2 advantage sets among {2 * len(gammas)} (estimator, gamma)")
    print()
    print(fmt_table(res, gammas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
