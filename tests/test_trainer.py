"""The trainer on a tiny Llama (tests/_tiny_rl.py): config handling, rollout modes, one update in the
right direction, run folder, checkpoints (HF-loadable, atomic), kill-and-resume == unbroken, LoRA."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.errors import UserError  # noqa: E402
from cocos.rl.config import TrainConfig, load_config  # noqa: E402
from cocos.rl.objective import method_at  # noqa: E402
from cocos.rl.batch import trained_sequences  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(model="tiny", k=2, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0, micro_batch=3,
            lr=1e-2, max_steps=2, eval_limit=0, autocast="none", tensorboard=True, timeout=5.0, schedule="cosine",
            warmup_steps=1)


def make_trainer(out, resume=False, eval_problems=(), **over):
    from cocos.generation.policy import Policy
    from cocos.rl.trainer import Trainer

    tok = tiny_tokenizer()
    cfg = TrainConfig(**{**TINY, **over})
    policy = Policy(tiny_model(tok), tok, backend="auto")
    return Trainer(cfg, out, resume=resume, progress=False, policy=policy, problems=add_problems(2),
                   eval_problems=list(eval_problems))


# ---- config -------------------------------------------------------------------------------------
def test_config_overrides_types_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("k: 4\ngamma: 1\nlora: true\ntrain_turns: [2]\n")
    cfg = load_config(p, ["lr=2e-5", "mode=trajectory", "eval_limit=none", "fewshot=yes"])
    assert (cfg.k, cfg.gamma, cfg.lora, cfg.lr, cfg.eval_limit, cfg.fewshot) == (4, 1.0, True, 2e-5, None, True)
    assert isinstance(cfg.gamma, float) and cfg.trained_turns() == [1]
    for bad, field in [("kk=3", "kk"), ("k=two", "k"), ("k=1", "k"), ("mode=sideways", "mode"), ("lora=maybe", "lora"),
                       ("beta=-1", "beta"), ("train_turns=3", "train_turns"), ("lr", "lr")]:
        with pytest.raises(UserError, match=field):
            load_config(p, [bad])
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    # last-turn mode trains the last turn only
    assert load_config(None, ["mode=last-turn", "turns=3"]).trained_turns() == [2]


def test_shipped_configs_load():
    """Every RL config loads, and what --print-config writes loads back to the same config."""
    from cocos.config import dump_config

    for path in sorted(ROOT.glob("configs/cocos_*.yaml")) + [ROOT / "configs" / "score.yaml"]:
        cfg = load_config(path)
        reloaded = TrainConfig(**yaml.safe_load(dump_config(cfg)))
        assert reloaded == cfg, path.name
    paper = load_config(ROOT / "configs" / "cocos_paper.yaml")
    # global batch 128 sequences = 64 problems x k 2 (the authors' code; configs/cocos_paper.yaml says why)
    assert (paper.lr, paper.k, paper.problems_per_step * paper.k, paper.max_new_tokens, paper.gamma, paper.beta,
            paper.temperature, paper.schedule, paper.top_p) == (1e-5, 2, 128, 512, 0.5, 0.01, 0.9, "cosine", 1.0)
    score = load_config(ROOT / "configs" / "score.yaml")
    assert score.method == "score" and score.reward == "binary"


# ---- rollout modes ------------------------------------------------------------------------------
def test_last_turn_vs_trajectory_sampling(tmp_path):
    tr = make_trainer(tmp_path / "a", mode="last-turn", k=3)
    trajs = tr.rollout(tr.problems, step=0)
    assert len(trajs) == 6
    for g in range(2):  # the 3 samples of a problem share one turn 1; only their last turns are trained
        group = trajs[3 * g:3 * g + 3]
        assert all(t.turns[0] is group[0].turns[0] and t.shared_prefix_turns == 1 for t in group)
    seqs = trained_sequences(trajs, method_at(tr.cfg, 0))
    assert len(seqs) == 6 and {s.turn for s in seqs} == {1}

    tr2 = make_trainer(tmp_path / "b", mode="trajectory", k=3)
    trajs2 = tr2.rollout(tr2.problems, step=0)
    assert all(t.shared_prefix_turns == 0 for t in trajs2)
    assert len({id(t.turns[0]) for t in trajs2}) == 6
    seqs2 = trained_sequences(trajs2, method_at(tr2.cfg, 0))
    assert len(seqs2) == 12 and {s.turn for s in seqs2} == {0, 1}


# ---- one update ---------------------------------------------------------------------------------
def _logp(model, prompt, completion):
    from cocos.rl import objective

    ids, attn, pos, cmask = objective.pad_sequences([prompt], [completion], 0)
    with torch.no_grad():
        return float(objective.masked_sum(objective.token_logprobs(model, ids, attn, pos, cmask.shape[1], temperature=1.0)[0], cmask)[0])


def test_one_step_moves_weights_toward_positive_advantage(tmp_path):
    from cocos.episodes.records import Trajectory, Turn

    tr = make_trainer(tmp_path / "r", lr=5e-3, beta=0.0, max_grad_norm=0.0, schedule="constant", warmup_steps=0)
    tok = tr.tokenizer
    prompt = tok("Write a function to add two numbers. [BEGIN]\n").input_ids
    good = tok.convert_tokens_to_ids(["def add(a, b):\n    return a + b\n", "[DONE]"])
    bad = tok.convert_tokens_to_ids(["def add(a, b):\n    return b\n", "[DONE]"])

    def traj(c, r, i):
        turn = Turn(prompt="p", text="t", code="c", reward=r, prompt_ids=prompt, completion_ids=c)
        return Trajectory(task_id=1, turns=[turn, turn], sample_index=i)

    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    lp_good, lp_bad = _logp(tr.model, prompt, good), _logp(tr.model, prompt, bad)
    res = tr.optimize([traj(good, 1.0, 0), traj(bad, 0.0, 1)], step=0)
    assert res.trajectory_advantages() == pytest.approx([0.5, -0.5])  # r1 = r2 = r: R = 0.5 r + r - r = 0.5 r
    tr.sync_and_step()
    assert any(not torch.equal(before[n], p) for n, p in tr.model.named_parameters())
    assert _logp(tr.model, prompt, good) > lp_good + 0.01
    assert _logp(tr.model, prompt, bad) < lp_bad - 0.01


def test_trainer_loss_counts_completion_tokens_only(tmp_path):
    """The trainer's gradient equals that of -(1/N) sum_i A_i * (log-probs of turn i's completion tokens),
    computed here the plain way (unpadded, explicit positions): prompt and padding tokens carry no loss."""
    from cocos.episodes.records import Trajectory, Turn

    tr = make_trainer(tmp_path / "m", beta=0.0, micro_batch=2)
    tok = tr.tokenizer
    snip = tok.convert_tokens_to_ids(["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b\n", "[DONE]"])
    p1 = tok("Write a function to add two numbers. [BEGIN]\n").input_ids
    p2 = p1 + tok("[CORRECT]\n").input_ids  # a longer turn-2 prompt: rows get different padding
    trajs = [Trajectory(1, [Turn("p", "t", "c", reward=r1, prompt_ids=p1, completion_ids=c1),
                            Turn("p", "t", "c", reward=r2, prompt_ids=p2, completion_ids=c2)], sample_index=i)
             for i, (r1, r2, c1, c2) in enumerate([(0.0, 1.0, [snip[1], snip[2]], [snip[0], snip[2]]),
                                                   (1 / 3, 0.0, [snip[2]], [snip[1], snip[1], snip[2]])])]
    res = tr.optimize(trajs, step=0)
    # R = 0.5 r1 + r2 - r1: 1.0 and -1/6 -> advantages +-(1 + 1/6)
    assert res.trajectory_advantages() == pytest.approx([7 / 6, -7 / 6])
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters()}
    tr.model.zero_grad()
    loss = 0.0
    for traj, a in zip(trajs, res.trajectory_advantages()):
        for turn in traj.turns:
            ids = torch.tensor([turn.prompt_ids + turn.completion_ids])
            logits = tr.model(input_ids=ids).logits[0, :-1]
            lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            loss = loss - a * lp[len(turn.prompt_ids) - 1:].sum() / 2
    loss.backward()
    for n, p in tr.model.named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-5, rtol=1e-3), n


# ---- runs, checkpoints, resume ------------------------------------------------------------------
def _weights(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def test_run_folder_checkpoint_and_resume_equals_unbroken(tmp_path):
    from transformers import AutoModelForCausalLM

    # unbroken: 2 steps
    a = make_trainer(tmp_path / "a", save_every=1, eval_every=1, eval_problems=add_problems(1))
    a.train()
    wa = _weights(a.model)
    run = tmp_path / "a"
    assert (run / "config.yaml").exists() and list((run / "tensorboard").iterdir())
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in ("reward@1", "reward@2", "acc@1", "acc@2", "kl", "entropy", "adv_std", "length@1", "time_generate",
                "time_execute", "time_train", "tokens_per_s", "edit_sim(1,2)", "grad_norm", "warnings",
                "copy_if_wrong", "delta_i2c", "delta_c2i", "edit_sim_if_wrong", "edit_sim_if_right", "keep_selectivity",
                "confidence_auroc", "turn2_signal"):
        assert key in lines[0], key
    rollouts = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    per_step = lines[0]["n_trajectories"]
    assert [r["step"] for r in rollouts] == [1] * per_step + [2] * per_step
    assert all(len(r["rewards"]) == 2 and 0.0 <= r["edit_sim"] <= 1.0 for r in rollouts)
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # step 1 samples from the reference itself
    metrics = json.loads((run / "eval" / "step_1" / "metrics.json").read_text())
    assert "acc@1" in metrics and "delta(1,2)" in metrics and (run / "eval" / "step_1" / "samples.jsonl").exists()
    assert (run / "eval" / "step_2" / "metrics.json").exists()
    ckpt = run / "checkpoints" / "step_2"
    loaded = AutoModelForCausalLM.from_pretrained(str(ckpt))
    assert all(torch.equal(loaded.state_dict()[n], wa[n]) for n in wa)
    assert (ckpt / "trainer_state.pt").exists() and (ckpt / "rng_rank0.pt").exists()
    assert not list((run / "checkpoints").glob(".tmp-*"))

    # killed right after the checkpoint of step 1 ...
    class Killed(Exception):
        pass

    b = make_trainer(tmp_path / "b", save_every=1)
    save = b.save_checkpoint

    def save_then_die():
        save()
        raise Killed

    b.save_checkpoint = save_then_die
    with pytest.raises(Killed):
        b.train()
    # ... with a half-written checkpoint of step 2 lying around (what a kill during a save leaves)
    (tmp_path / "b" / "checkpoints" / ".tmp-step_2").mkdir()
    with pytest.raises(UserError, match="--resume"):
        make_trainer(tmp_path / "b")
    c = make_trainer(tmp_path / "b", resume=True, save_every=1)
    assert c.step == 1
    c.train()
    wc = _weights(c.model)
    assert all(torch.equal(wa[n], wc[n]) for n in wa), "resumed run differs from the unbroken one"
    assert [json.loads(x)["step"] for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()] == [1, 2]
    resumed = [json.loads(x)["step"] for x in (tmp_path / "b" / "rollouts.jsonl").read_text().splitlines()]
    assert resumed == [1] * per_step + [2] * per_step  # the killed run's step 1 once, step 2 from the resumed run


def test_lora_reference_is_adapters_off_and_checkpoint_has_merged_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    tr = make_trainer(tmp_path / "l", lora=True, lora_r=4, lora_alpha=8, max_steps=1, lr=5e-2, warmup_steps=0,
                      lora_target_modules="q_proj,v_proj,o_proj")
    assert tr.ref_model is None and tr.policy.backend == "hf"
    n_train = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    assert 0 < n_train < sum(p.numel() for p in tr.model.parameters()) / 5
    out = tr.train()
    assert out["last"]["kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA B starts at 0: policy == reference
    assert out["last"]["adv_std"] > 0
    ckpt = tmp_path / "l" / "checkpoints" / "step_1"
    assert (ckpt / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(ckpt))
    ids = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tr.model(ids).logits, atol=1e-4)
        with tr.model.disable_adapter():
            base = tr.model(ids).logits
    assert not torch.allclose(merged(ids).logits, base, atol=1e-4)  # the adapters did learn something


def test_max_minutes_stops_after_the_step_that_crosses_it(tmp_path, monkeypatch):
    import cocos.rl.trainer as trainer_mod

    clock = iter(range(0, 10_000, 40))  # every reading of the clock is 40 s later than the last
    monkeypatch.setattr(trainer_mod.time, "time", lambda: float(next(clock)))
    tr = make_trainer(tmp_path / "run", max_steps=50, max_minutes=1.0)
    tr.train()
    assert 1 <= tr.step < 50  # stopped on time, not at max_steps
    assert trainer_mod.checkpoint_steps(tmp_path / "run") == [tr.step]  # and saved the last step
    with pytest.raises(UserError, match="max_minutes"):
        TrainConfig(**{**TINY, "max_minutes": -1})


@pytest.mark.parametrize("passes", ["shared-prefix", "plain"])
def test_skip_uniform_groups_drops_only_groups_without_reward_signal(tmp_path, passes, monkeypatch):
    """With skip_uniform_groups, a group whose k rewards are equal gets advantage 0 and no forward/backward;
    the gradient is that of the other groups alone, normalised by all trajectories as before."""
    from cocos.episodes.records import Trajectory, Turn

    def make(skip):
        tr = make_trainer(tmp_path / str(skip), beta=0.01, micro_batch=2, skip_uniform_groups=skip, logprob_passes=passes)
        tok = tr.tokenizer
        snip = tok.convert_tokens_to_ids(["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b\n", "[DONE]"])
        p = tok("Write a function to add two numbers. [BEGIN]\n").input_ids

        def traj(i, r, c):
            return Trajectory(1, [Turn("p", "t", "c", reward=r, prompt_ids=p, completion_ids=c)] * 2, sample_index=i)

        # group 1 (k=2): rewards differ; group 2: both 0 -> only the KL part of the score would differ
        return tr, [traj(0, 1.0, [snip[0], snip[2]]), traj(1, 0.0, [snip[1], snip[2]]),
                    traj(0, 0.0, [snip[1], snip[2]]), traj(1, 0.0, [snip[0], snip[1], snip[2]])]

    full, trajs = make(False)
    full.model.load_state_dict({n: v + 0.01 * torch.randn_like(v) for n, v in full.model.state_dict().items()})
    r_full = full.optimize(trajs, step=0)
    assert r_full.n_trained == 4 and r_full.trajectory_advantages()[2] != 0.0  # KL differences give group 2 a tiny advantage
    skip, trajs2 = make(True)
    skip.model.load_state_dict(full.model.state_dict())
    import cocos.rl.passes as passes_mod

    calls = []
    name = "grouped_passes" if passes == "shared-prefix" else "micro_batches"
    real = getattr(passes_mod, name)
    monkeypatch.setattr(passes_mod, name, lambda tr, seqs, *a: (calls.append(len(seqs)), real(tr, seqs, *a))[1])
    if passes == "shared-prefix":  # the trainer picks its pass functions from its own namespace
        monkeypatch.setattr("cocos.rl.trainer.grouped_passes", passes_mod.grouped_passes)
    r_skip = skip.optimize(trajs2, step=0)
    # the passes see 2 trajectories x 2 turns (plain: twice, the no-grad pass and the gradient pass)
    assert r_skip.n_trained == 2 and calls == ([4] if passes == "shared-prefix" else [4, 4])
    assert r_skip.trajectory_advantages()[2:] == [0.0, 0.0] and r_skip.kl()[2:] == [None, None]
    assert r_skip.trajectory_advantages()[:2] == pytest.approx(r_full.trajectory_advantages()[:2])
    # the gradient equals the full one minus group 2's contribution (recomputed with its advantages)
    g_skip = {n: p.grad.clone() for n, p in skip.model.named_parameters()}
    full.model.zero_grad()
    only_two = [trajs[0], trajs[1]]
    full_two = full.optimize(only_two, step=0, n_traj_total=4)
    assert full_two.trajectory_advantages() == pytest.approx(r_full.trajectory_advantages()[:2])
    for n, p in full.model.named_parameters():
        assert torch.allclose(g_skip[n], p.grad, atol=1e-6, rtol=1e-4), n


def test_curriculum_keeps_problems_with_a_reward_difference(tmp_path, monkeypatch):
    """curriculum_k: turn-1 samples of every training problem with the starting model; only problems whose
    samples earned different rewards are trained; the choice is saved and a resumed run reuses it."""
    import cocos.episodes.rollout as rollout_mod
    from cocos.episodes.records import Trajectory, Turn

    calls = []
    table = {900: [0.0, 0.0, 0.0], 901: [0.0, 1 / 3, 0.0]}

    def sampled(policy, problems, settings, *, samples_per_problem, **kw):
        calls.append((settings.turns, samples_per_problem, [p.task_id for p in problems]))
        return [Trajectory(p.task_id, [Turn("prompt", "text", "code", reward=r)], sample_index=j)
                for p in problems for j, r in enumerate(table[p.task_id][:samples_per_problem])]

    monkeypatch.setattr(rollout_mod, "run_episodes", sampled)
    tr = make_trainer(tmp_path / "run", curriculum_k=3)
    assert calls == [(1, 3, [900, 901])]
    assert [p.task_id for p in tr.problems] == [901]
    assert json.loads((tmp_path / "run" / "curriculum.json").read_text())["kept"] == ["901"]
    monkeypatch.undo()  # training itself runs real episodes
    tr.train()
    monkeypatch.setattr(rollout_mod, "run_episodes", sampled)
    calls.clear()
    resumed = make_trainer(tmp_path / "run", resume=True, curriculum_k=3, max_steps=3)
    assert calls == [] and [p.task_id for p in resumed.problems] == [901]
    table[901] = [0.0, 0.0, 0.0]  # no problem with a reward difference: train on all of them
    assert [p.task_id for p in make_trainer(tmp_path / "run2", curriculum_k=3).problems] == [900, 901]
    with pytest.raises(UserError, match="curriculum_k"):
        TrainConfig(**{**TINY, "curriculum_k": -1})


# ---- SCoRe through the trainer ------------------------------------------------------------------
def test_score_stage_switch_through_the_trainer(tmp_path):
    """method=score: stage I for score_stage1_steps steps (score = r_T - beta_1 KL_1 - beta KL_T), then stage II
    (score = r_1 + r_T + alpha (r_T - r_1) - beta (KL_1 + KL_T)); both turns trained in both stages. Checked on the
    logged means, which the scores are linear in (every group trained). The policy starts a little away from its
    reference so that every step has a KL on both turns to weigh."""
    tr = make_trainer(tmp_path / "score", method="score", score_stage1_steps=2, score_beta1=0.5, beta=0.01,
                      score_alpha=10.0, max_steps=4, skip_uniform_groups=False, schedule="constant", warmup_steps=0)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tr.train()
    log = [json.loads(x) for x in (tmp_path / "score" / "log.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in log] == [1, 1, 2, 2] and all(s["trained_frac"] == 1.0 for s in log)
    for s in log:
        assert abs(s["kl@1"]) > 1e-4 and abs(s["kl@2"]) > 1e-4  # both turns trained (else no KL is computed)
        if s["stage"] == 1:
            expected = s["reward@2"] - 0.5 * s["kl@1"] - 0.01 * s["kl@2"]
        else:
            bonus = s["reward@1"] + s["reward@2"] + 10.0 * (s["reward@2"] - s["reward@1"])
            expected = bonus - 0.01 * (s["kl@1"] + s["kl@2"])
        assert s["score"] == pytest.approx(expected, abs=1e-5), s["step"]


def test_trainer_precision_is_its_own_after_a_bf16_fit_in_the_process(tmp_path):
    """A TRL fit under bf16 (cocos sft, the baselines) leaves accelerate's shared state at bf16; the RL trainer built
    after it in the same process keeps accelerate's precision off and runs only its own autocast setting."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # as a TRL fit's TrainingArguments do, then its Accelerator:
    Accelerator(cpu=True, mixed_precision="bf16")  # what a bf16 fit leaves behind
    tr = make_trainer(tmp_path / "after_bf16", autocast="none")
    assert tr.acc.mixed_precision == "no"
    x = torch.tensor([[1, 2, 3]])
    assert tr.model(input_ids=x).logits.dtype == torch.float32  # no autocast wrapped around the forward


def test_a_step_that_trained_no_group_logs_no_kl():
    """skip_uniform_groups can leave a step with no trained group: its KL was not measured, so the log says null
    (the report skips it), not 0.0, which reads as "at the reference" and pulls sparse-reward KL curves to 0."""
    from cocos.rl.monitor import Watchdog, step_stats

    def traj(kl):
        return {"rewards": [0.0, 0.0], "correct": [False, False], "lengths": [5, 5], "edit_sim": 1.0, "score": 0.0,
                "advantage": 0.0, "kl": kl, "trained": kl is not None}

    timing = [{"gap_n": 0, "gap_sum": 0.0, "gap_max": 0.0, "entropy": 0.0, "gen": 1.0, "rollout": 2.0, "train": 0.0,
               "tokens": 10}]
    none = step_stats([traj(None)] * 4, timing, 2, 3.0)
    assert none["trained_frac"] == 0 and none["kl"] is None and none["kl@1"] is None and none["kl@2"] is None
    assert Watchdog().check({**none, "step": 1, "turns": 2}) == []  # no KL, no "exploding" check
    some = step_stats([traj([0.5, 0.25]), traj([1.5, 0.75]), traj(None), traj(None)], timing, 2, 3.0)
    assert some["kl"] == pytest.approx(1.5) and some["kl@1"] == pytest.approx(1.0) and some["kl@2"] == pytest.approx(0.5)


def test_correction_monitors_and_the_no_revision_signature():
    """The step's correction monitors from known trajectories (two groups of k=2), and the watchdog naming "no
    revision behaviour" once turn 2 has copied most wrong turn-1 answers for a whole window, not before."""
    from cocos.rl.monitor import Watchdog, correction_stats

    def traj(correct, rewards, sim, confidence):
        return {"correct": correct, "rewards": rewards, "edit_sim": sim, "confidence": [confidence, None]}

    local = [traj([False, False], [0.0, 0.0], 0.99, -0.5),  # wrong, copied
             traj([False, True], [0.3, 1.0], 0.5, -0.2),  # wrong -> right, rewritten
             traj([True, True], [1.0, 1.0], 1.0, -0.1),
             traj([True, True], [1.0, 1.0], 0.7, -0.3)]
    c = correction_stats(local, T=2, k=2)
    assert c["copy_if_wrong"] == 0.5 and c["delta_i2c"] == 0.25 and c["delta_c2i"] == 0.0
    assert c["edit_sim_if_wrong"] == pytest.approx(0.745) and c["edit_sim_if_right"] == pytest.approx(0.85)
    assert c["turn2_signal"] == 0.5  # the first group's turn-2 rewards differ, the second's do not
    # right answers kept 1.0 and 0.7, wrong ones 0.99 and 0.5: 3 of the 4 (right, wrong) pairs keep the right one more
    assert c["keep_selectivity"] == 0.75
    # turn-1 confidence: right -0.1 and -0.3 against wrong -0.5 and -0.2: 3 of 4 pairs rank the right one higher
    assert c["confidence_auroc"] == 0.75
    local[0]["confidence"] = [None, None]  # not recorded for one trajectory: not measured
    assert correction_stats(local, T=2, k=2)["confidence_auroc"] is None
    assert correction_stats(local[2:], T=2, k=2)["copy_if_wrong"] is None  # no wrong turn 1: not measured
    assert correction_stats(local[2:], T=2, k=2)["keep_selectivity"] is None
    assert correction_stats(local, T=1, k=2) == {}

    def step(i, copy):
        return {"step": i, "turns": 2, "kl": 0.0, "reward@1": 0.1, "reward@2": 0.1, "reward_mean": 0.1,
                "edit_sim(1,2)": 0.9, "copy_if_wrong": copy}

    dog = Watchdog(window=3)
    said = [dog.check(step(i, copy)) for i, copy in enumerate([0.95, None, 0.95, 0.95, 0.95], 1)]
    named = [any("no revision behaviour" in w for w in ws) for ws in said]
    assert named == [False, False, False, False, True]  # a step with no wrong turn 1 breaks the window

    def echo(i, share):
        return {**step(i, 0.5), "hardcoded@2": share}

    dog = Watchdog(window=3)
    said = [dog.check(echo(i, share)) for i, share in enumerate([0.3, 0.1, 0.3, 0.25, 0.4], 1)]
    named = [any("reward hacking: " in w and "shown in the prompt" in w for w in ws) for ws in said]
    assert named == [False, False, False, False, True]  # three steps in a row at 20% or more


def test_watchdog_names_a_turn_1_that_gives_up_its_answers():
    """The per-turn binary arm's signature (gamma 0.5, steps 200-230 of docs/results/self_correction): turn 1's
    reward falls from ~0.25 to ~0.02 while turn 2 holds ~0.22. A turn 2 that rises over a steady turn 1 (correction)
    and a turn 1 that falls with turn 2 (a bad step) are not named."""
    from cocos.rl.monitor import Watchdog

    def run(r1s, r2s):
        dog = Watchdog(window=2)
        return [any("turn 1 gives up" in w for w in dog.check(
            {"step": i, "turns": 2, "kl": 0.0, "reward@1": r1, "reward@2": r2, "reward_mean": (r1 + r2) / 2}))
            for i, (r1, r2) in enumerate(zip(r1s, r2s), 1)]

    said = run([0.25] * 8 + [0.02] * 4, [0.25] * 8 + [0.22] * 4)
    # over the last 4 steps turn 1 averages 0.19, 0.135, then 0.0775: below half of 0.25 from step 11
    assert said == [False] * 10 + [True, True]
    assert not any(run([0.25] * 12, [0.25] * 8 + [0.5] * 4))  # turn 2 above a steady turn 1: correction
    assert not any(run([0.25] * 8 + [0.02] * 4, [0.25] * 8 + [0.02] * 4))  # both fall together
    assert not any(run([0.25] * 3 + [0.02] * 4, [0.25] * 3 + [0.22] * 4))  # too few steps to compare (4w)
