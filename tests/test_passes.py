"""The shared-prefix log-prob passes (cocos.rl.passes) against the plain padded ones: the same log-probs, KL,
scores, advantages, loss and gradients, for T = 2 and T = 3, in both rollout modes, on real rollouts of a tiny
Llama (tests/_tiny_rl.py) whose policy starts away from its reference (so the KL is not 0)."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import add_problems, perturbed_trainer, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.rl.config import TrainConfig  # noqa: E402
from cocos.rl.batch import Batch  # noqa: E402
from cocos.rl.passes import common_prefix_length, sequence_logprobs  # noqa: E402


def test_common_prefix_stops_before_the_shortest_prompt():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # the last prompt token stays in the suffix
    assert common_prefix_length([[7, 2], [1, 2]]) == 0


def test_shared_prefix_logprobs_and_gradients_equal_the_padded_batch():
    tok = tiny_tokenizer()
    model = tiny_model(tok, snippet_bias=False).train()
    base = [5, 6, 7, 8, 9, 10, 11, 12]
    prompts, comps = [base + [13], base + [14, 15], base], [[20, 21, 22], [23], [24, 25, 26, 27, 28]]
    a = torch.tensor([1.0, -0.5, 0.3])
    out = {}
    for share in (False, True):
        model.zero_grad()
        logp, ent, mask = sequence_logprobs(model, prompts, comps, 0, "cpu", temperature=0.9, with_entropy=True,
                                            share_prefix=share)
        (-(a * (logp * mask).sum(-1)).sum()).backward()
        out[share] = (logp * mask, ent * mask, [p.grad.clone() for p in model.parameters()])
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5) and torch.allclose(out[True][1], out[False][1], atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(out[True][2], out[False][2]))


@pytest.mark.parametrize("turns,mode", [(2, "trajectory"), (3, "trajectory"), (2, "last-turn"), (3, "last-turn")])
def test_fast_path_gradients_equal_the_plain_path(tmp_path, turns, mode):
    tr = perturbed_trainer(tmp_path / "run", turns=turns, mode=mode, logprob_passes="plain")
    cfg = tr.cfg
    trajs = tr.rollout(tr.problems, step=0)
    out = {}
    for passes in ("plain", "shared-prefix"):
        tr.cfg = replace(cfg, logprob_passes=passes)
        tr.model.zero_grad(set_to_none=True)
        res = tr.optimize(trajs, step=0)
        out[passes] = res, [p.grad.clone() for p in tr.model.parameters()]
    (plain, g_plain), (fast, g_fast) = out["plain"], out["shared-prefix"]
    assert any(abs(x) > 1e-4 for row in plain.kl() for x in row)
    for view in (lambda b: b.scores().tolist(), Batch.trajectory_advantages, lambda b: b.loss):
        assert view(fast) == pytest.approx(view(plain), abs=1e-5)
    for (_, a), (_, b) in zip(fast.sampled_vs_trained(), plain.sampled_vs_trained(), strict=True):
        assert a == pytest.approx(b, abs=1e-5)  # the trainer's log-prob of every trained token
    assert all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(g_fast, g_plain))
    assert any(x.abs().max() > 0 for x in g_plain)


@pytest.mark.parametrize("passes,lora", [("plain", False), ("shared-prefix", False), ("shared-prefix", True)])
def test_gradient_checkpointing_recomputes_the_layers_and_keeps_the_gradients(tmp_path, passes, lora):
    """Checkpointed layers (recomputed in the backward) give the gradients of the plain passes without checkpointing;
    in shared-prefix passes, the recomputed layers read the same prefix (a cache written twice would not)."""
    from cocos.generation.policy import Policy
    from cocos.rl.trainer import Trainer

    tok = tiny_tokenizer()
    extra = dict(lora=True, lora_r=4, lora_alpha=8) if lora else {}
    cfg = TrainConfig(model="tiny", k=3, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0, micro_batch=2,
                      max_steps=1, eval_limit=0, autocast="none", tensorboard=False, timeout=5.0, beta=0.05,
                      logprob_passes=passes, gradient_checkpointing=True, **extra)
    policy = Policy(tiny_model(tok, snippet_bias=False), tok, backend="auto")
    tr = Trainer(cfg, tmp_path / "run", progress=False, policy=policy, problems=add_problems(2))
    base = tr.unwrapped.get_base_model() if lora else tr.unwrapped
    assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
    torch.manual_seed(1)
    with torch.no_grad():  # away from the reference: every sequence has a KL
        for p in tr.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trajs = tr.rollout(tr.problems, step=0)
    calls = []
    # count the forwards of a module inside the checkpointed layer (module hooks do not run in the recompute)
    mlp = base.model.layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *a, **kw: calls.append(1) or forward(*a, **kw)
    out = {}
    for ckpt in (True, False):
        if not ckpt:  # the reference: plain passes, nothing recomputed
            (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()
            tr.cfg = replace(cfg, logprob_passes="plain")
        calls.clear()
        tr.model.zero_grad(set_to_none=True)
        res = tr.optimize(trajs, step=0)
        out[ckpt] = res, [p.grad.clone() for p in tr.model.parameters() if p.grad is not None], len(calls)
    (res_c, g_c, n_c), (res_p, g_p, n_p) = out[True], out[False]
    if passes == "plain":
        assert n_c > n_p  # the checkpointed backward ran layer 0 again for each policy pass with gradient
    else:  # two passes instead of three, and the policy's recomputed in the backward
        assert n_c > 2 * n_p / 3
    assert res_c.loss == pytest.approx(res_p.loss, abs=1e-5)
    assert len(g_c) == len(g_p) > 0 and any(x.abs().max() > 0 for x in g_p)
    assert all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(g_c, g_p))
