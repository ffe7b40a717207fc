"""The RL update is on-policy: the trainer scores each sampled token under the distribution it was drawn from.

For trajectories sampled by each backend (the engine in float32, HF generate; vLLM in tests/test_vllm.py), the
trainer's recomputed log-prob of every completion token (Trainer.optimize, the same pass that feeds the loss
and the KL) equals the log-prob the sampler assigned to it, at temperature 0.9 and 1.0, for turns 1 and 2.
Before the first update the policy is the reference, so every trajectory's KL is 0.

Tolerance: 2e-4 nats per token. Both sides are float32; they differ only in how the logits are computed
(KV-cached decode vs one full forward), measured at ~1e-6 here. Scoring under softmax(logits) instead of
softmax(logits / 0.9) (the bug this file pins) moves them by ~1e-1.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.rl.objective import method_at  # noqa: E402
from cocos.rl.batch import trained_sequences  # noqa: E402

TOL = 2e-4


def _random_tiny_model(tokenizer, seed=0):
    """The tiny Llama with random weights (no snippet bias): it writes many-token, high-entropy completions,
    so the invariant is checked on hundreds of tokens, not on one snippet token per turn."""
    model = tiny_model(tokenizer, seed, snippet_bias=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peakier than uniform: temperature matters
    return model


def _trainer(tmp_path, backend, temperature, make_model=_random_tiny_model):
    from cocos.generation.policy import Policy
    from cocos.rl.config import TrainConfig
    from cocos.rl.trainer import Trainer

    tok = tiny_tokenizer()
    policy = Policy(make_model(tok), tok, backend=backend, rollout_dtype="float32" if backend == "engine" else "model")
    assert policy.backend == backend
    cfg = TrainConfig(model="tiny", k=3, turns=2, problems_per_step=2, max_new_tokens=24, temperature=temperature,
                      micro_batch=4, lr=1e-3, max_steps=1, eval_limit=0, autocast="none", timeout=5.0,
                      skip_uniform_groups=False, tensorboard=False)
    return Trainer(cfg, tmp_path / f"{backend}-{temperature}", progress=False, policy=policy, problems=add_problems(2))


@pytest.mark.parametrize("backend", ["engine", "hf"])
@pytest.mark.parametrize("temperature", [0.9, 1.0])
def test_trainer_logprobs_equal_the_samplers_and_kl_starts_at_zero(tmp_path, backend, temperature):
    tr = _trainer(tmp_path, backend, temperature)
    trajs = tr.rollout(tr.problems, step=0)
    assert len(trajs) == 6
    res = tr.optimize(trajs, step=0)
    pairs = res.sampled_vs_trained()
    seqs = trained_sequences(trajs, method_at(tr.cfg, 0))
    assert sorted({s.turn for s in seqs}) == [0, 1] and len(pairs) == len(seqs) == 12  # turns 1 and 2
    n_tokens = 0
    for (sampled, trained), s in zip(pairs, seqs):
        assert sampled is not None and len(sampled) == len(trained) == len(s.completion_ids) > 0
        gap = max(abs(a - b) for a, b in zip(sampled, trained))
        assert gap < TOL, f"turn {s.turn + 1}: sampler vs trainer log-prob differ by {gap:.2e}"
        n_tokens += len(sampled)
    assert n_tokens > 100
    # step 1, before any update: the policy is the reference, so KL is exactly 0 for every trajectory and turn
    assert all(row == [0.0, 0.0] for row in res.kl())


def test_untempered_scoring_would_break_the_invariant(tmp_path):
    """The check above has teeth: the same samples scored at temperature 1 (today's bug) miss by far more."""
    from cocos.rl import objective

    tr = _trainer(tmp_path, "engine", 0.9)
    trajs = tr.rollout(tr.problems, step=0)
    seq = trained_sequences(trajs, method_at(tr.cfg, 0))[0]
    ids, attn, pos, cmask = objective.pad_sequences([seq.prompt_ids], [seq.completion_ids], tr.pad_id)
    with torch.no_grad():
        wrong, _ = objective.token_logprobs(tr.model, ids, attn, pos, cmask.shape[1], temperature=1.0)
    gap = max(abs(a - b) for a, b in zip(seq.sampler_logprobs, wrong[0].tolist()))
    assert gap > 100 * TOL


def test_kl_is_positive_after_an_update(tmp_path):
    """After one optimizer step the policy has moved: the next step's KL to the reference is no longer 0.
    (The snippet model of _tiny_rl earns different rewards within a group, so the first update is not zero.)"""
    tr = _trainer(tmp_path, "engine", 0.9, make_model=tiny_model)
    tr.cfg.max_steps = 2
    first = tr.train_step()
    second = tr.train_step()
    assert first["kl"] == 0.0 and first["kl@1"] == 0.0 and first["kl@2"] == 0.0
    assert first["logprob_gap_max"] < TOL and second["logprob_gap_max"] < TOL  # the engine samples the live weights
    assert first["adv_std"] > 0  # rewards differed: the step trained something
    assert second["kl"] != 0.0
