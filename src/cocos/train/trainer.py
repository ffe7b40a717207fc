"""The CoCoS trainer loop: rollouts -> rewards -> RLOO update, with evaluation, checkpoints and logs.

    cfg = load_config("configs/cocos_cpu.yaml", overrides=["max_steps=2"])
    Trainer(cfg, "runs/x").train()          # or: cocos train --config ... --out runs/x [--resume]

One optimizer step:
  1. take the step's `problems_per_step` problems in the run's data order; each rank takes its share;
  2. rollout: k trajectories of T turns per problem (cocos.rollout.run_episodes, sandboxed rewards);
  3. log-probs of every trained turn's completion under the reference (no grad) and the policy (no grad)
     -> per-turn KL -> scores -> leave-one-out advantages (cocos.train.rloo);
  4. policy forward with gradient in micro-batches, loss = -(1/N) sum A * sum log-probs, backward;
  5. gradients averaged across ranks, clipped; AdamW step; LR schedule step.

Run folder:
  config.yaml                 the resolved TrainConfig
  log.jsonl                   one line per step (rewards, accuracy per turn, KL, entropy, advantages,
                              lengths, timings, tokens/s, watchdog warnings)
  tensorboard/                TensorBoard events (W&B too with `wandb: true`)
  eval/step_N/                metrics.json (cocos.metrics) + samples.jsonl of the periodic evaluation
  checkpoints/step_N/         HF model + tokenizer (merged weights with LoRA, adapter in adapter/),
                              trainer_state.pt (optimizer, scheduler, step, data order), rng_rank*.pt;
                              written under a temporary name, then renamed: never half a checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from cocos.errors import UserError
from cocos.device import fast_bf16, sdpa_without_cudnn
from cocos.train import rloo
from cocos.train.config import TrainConfig, save_config

STATE_FILE = "trainer_state.pt"


class TrainedTurn(NamedTuple):
    """One trained turn of one trajectory: the token ids the update scores and where its KL and advantage go."""
    prompt_ids: list[int]
    completion_ids: list[int]
    traj: int  # index of its trajectory in the chunk
    turn: int  # 0-based turn
    sampler_logprobs: list[float] | None  # what the sampler assigned to completion_ids (None: backend didn't say)


# ---- small helpers ------------------------------------------------------------------------------
def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc). Without it the log-prob passes' large, varying-shape
    tensors leave a process holding 9-13 GB between steps where ~3 GB are live (measured with the default
    model), and two runs side by side on a 24 GB machine were OOM-killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else 0.0


def _std(xs) -> float:
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def checkpoint_steps(run_dir: Path) -> list[int]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in root.iterdir() if p.name.startswith("step_") and (p / STATE_FILE).exists())


class _TimedPolicy:
    """Wraps a Policy so the trainer can split rollout time into generating and executing."""

    def __init__(self, policy):
        self._policy, self.gen_time, self.gen_tokens = policy, 0.0, 0

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def generate(self, prompts, **kw):
        t = time.perf_counter()
        out = self._policy.generate(prompts, **kw)
        self.gen_time += time.perf_counter() - t
        self.gen_tokens += sum(len(g.completion_ids) for g in out)
        return out


# ---- failure signatures (the paper's, section on reward hacking) --------------------------------
@dataclass
class Watchdog:
    window: int = 5
    kl_max: float = 20.0
    edit_sim_max: float = 0.98
    history: list[dict] = field(default_factory=list)

    def check(self, stats: dict) -> list[str]:
        self.history.append(stats)
        h, w, out = self.history, self.window, []
        if stats["kl"] > self.kl_max:
            out.append(f"KL to the reference is exploding: {stats['kl']:.2f} nats per trajectory (> {self.kl_max})")
        T = stats["turns"]
        if T >= 2 and len(h) >= 2 * w:
            old, new = h[-2 * w:-w], h[-w:]
            d1 = _mean(s["reward@1"] for s in new) - _mean(s["reward@1"] for s in old)
            dT = _mean(s[f"reward@{T}"] for s in new) - _mean(s[f"reward@{T}"] for s in old)
            if d1 < -0.05 and dT > 0.05:
                out.append(f"reward hacking? turn-1 reward falls ({d1:+.3f}) while turn-{T} reward rises ({dT:+.3f}) "
                           f"over the last {w} steps")
        if T >= 2 and len(h) >= w and all(s.get(f"edit_sim(1,{T})", 0) > self.edit_sim_max for s in h[-w:]):
            out.append(f"no revision: edit similarity of turns 1 and {T} above {self.edit_sim_max} for {w} steps")
        if len(h) >= 2 * w:
            first = _mean(s["reward_mean"] for s in h[:w])
            last = _mean(s["reward_mean"] for s in h[-w:])
            if first > 0.02 and last < 0.1 * first:
                out.append(f"reward collapsed: mean reward {last:.3f} over the last {w} steps (was {first:.3f})")
        return out


# ---- the trainer --------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
                 policy=None, problems=None, eval_problems=None, accelerator=None):
        from accelerate import Accelerator

        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if cfg.problems_per_step % self.world:
            raise UserError(f"problems_per_step: {cfg.problems_per_step} does not split evenly across {self.world} processes")
        if (cfg.problems_per_step // self.world) % cfg.grad_accum:
            raise UserError(f"grad_accum: {cfg.grad_accum} does not divide the {cfg.problems_per_step // self.world} "
                            "problems of each process")
        self.trained_turns = cfg.trained_turns()
        self.is_main = self.acc.is_main_process

        existing = checkpoint_steps(self.out)
        if self.out.exists() and any(self.out.iterdir()) and not resume and (existing or (self.out / "log.jsonl").exists()):
            raise UserError(f"--out {self.out}: holds a run already; pass --resume to continue it or choose a new folder")
        if resume and not existing:
            raise UserError(f"--resume: no checkpoint in {self.out}/checkpoints to resume from")

        self._seed_everything(cfg.seed + self.rank)
        self._load_data(problems, eval_problems)
        self._load_models(policy)
        self.timed = _TimedPolicy(self.policy)  # generation time of the current step (reset by train_step)
        if cfg.curriculum_k:
            self._apply_curriculum(resume)
        self._build_optimizer()
        self.step = 0
        self.watchdog = Watchdog(cfg.watch_window, cfg.watch_kl_max, cfg.watch_edit_sim)
        if resume:
            self._load_checkpoint(self.out / "checkpoints" / f"step_{existing[-1]}")
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.acc.wait_for_everyone()
        self._writers()

    # ---- setup ----------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)
        with contextlib.suppress(ImportError):
            import numpy as np

            np.random.seed(seed % 2**32)

    def _load_data(self, problems, eval_problems) -> None:
        from cocos.problems import load_problems

        cfg = self.cfg
        self.problems = list(problems) if problems is not None else load_problems(cfg.dataset, cfg.split, cfg.train_limit)
        if cfg.train_limit:
            self.problems = self.problems[: cfg.train_limit]
        if not self.problems:
            raise UserError(f"dataset: {cfg.dataset} {cfg.split} has no problems")
        if eval_problems is not None:
            self.eval_problems = list(eval_problems)
        elif cfg.eval_limit == 0:
            self.eval_problems = []
        else:
            self.eval_problems = load_problems(cfg.eval_dataset, cfg.eval_split, cfg.eval_limit)

    def _load_models(self, policy) -> None:
        cfg = self.cfg
        if policy is None:
            from cocos.policy import load_policy

            backend = "hf" if cfg.lora and cfg.backend in ("auto", "engine") else cfg.backend
            policy = load_policy(cfg.model, dtype=cfg.dtype, backend=backend, rollout_dtype=cfg.rollout_dtype,
                                 verbose=self.is_main)
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.device = policy.device
        model = policy.model
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora_target_modules
            targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                     target_modules=targets, task_type="CAUSAL_LM"))
            # The engine reads plain nn.Linear weights and would ignore the adapters: generate through HF.
            from cocos.policy import Policy

            self.policy = Policy(model, policy.tokenizer, name=getattr(policy, "name", ""), source=getattr(policy, "source", ""),
                                 path=getattr(policy, "path", ""), backend="hf")
            self.ref_model = None  # reference = the same model with adapters disabled
        else:
            # Full fine-tuning: a frozen copy of the starting weights is the reference.
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model = model
        self.model.train()
        use_bf16 = cfg.autocast == "bf16" or (cfg.autocast == "auto" and fast_bf16(self.device))
        if cfg.autocast == "bf16" and not fast_bf16(self.device):
            raise UserError("autocast: bf16 is not fast on this hardware; use autocast=auto or none")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def _build_optimizer(self) -> None:
        from transformers import get_scheduler

        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=cfg.warmup_steps,
                                       num_training_steps=max(1, cfg.max_steps))

    def _writers(self) -> None:
        self.tb = self.wandb = None
        if not self.is_main:
            return
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1 if self.step else None)
        if self.cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("wandb: the wandb package is not installed (pip install 'cocos[wandb]') or set wandb=false")
            self.wandb = wandb.init(project=self.cfg.wandb_project, config=self.cfg.to_dict(), dir=str(self.out),
                                    name=self.out.name, resume="allow")

    def _apply_curriculum(self, resume: bool) -> None:
        """Keep the training problems on which the starting model's turn-1 samples earned different rewards.

        A problem whose k samples all earn the same reward (usually all 0 for a small model) gives RLOO no
        signal: with skip_uniform_groups it costs a rollout and trains nothing. The choice is made once, with
        the model the run starts from, and saved, so a resumed run trains on the same problems.
        """
        cfg, path = self.cfg, self.out / "curriculum.json"
        if resume and path.exists():
            kept = json.loads(path.read_text())["kept"]
        else:
            trajs = self._episodes(self.policy, self.problems, turns=1, k=cfg.curriculum_k, seed=cfg.seed,
                                   progress=self.progress and self.is_main)
            rewards: dict = {}
            for t in trajs:
                rewards.setdefault(str(t.task_id), []).append(round(t.rewards[0], 4))
            kept = [tid for tid, r in rewards.items() if max(r) > min(r)]
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"k": cfg.curriculum_k, "problems": len(rewards), "kept": kept,
                                            "turn1_rewards": rewards}, indent=1))
        if not kept:
            if self.is_main:
                print(f"cocos: curriculum: no training problem had a reward difference over {cfg.curriculum_k} "
                      "samples; training on all of them")
            return
        if self.is_main:
            print(f"cocos: curriculum: {len(kept)} of {len(self.problems)} training problems had a reward "
                  f"difference over {cfg.curriculum_k} turn-1 samples; training on those ({path})")
        keep = set(kept)
        self.problems = [p for p in self.problems if str(p.task_id) in keep]

    # ---- data order -----------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        """A fixed shuffle of the training problems per epoch (seeded: a resumed run sees the same order)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.problems), generator=g).tolist()

    def step_indices(self, step: int) -> list[int]:
        """Global problem indices of a 0-based step (epochs wrap around)."""
        P, n = self.cfg.problems_per_step, len(self.problems)
        out = []
        for pos in range(step * P, (step + 1) * P):
            out.append(self.epoch_order(pos // n)[pos % n])
        return out

    # ---- one step -------------------------------------------------------------------------------
    def kl_coefs(self, step: int) -> list[float]:
        cfg = self.cfg
        return rloo.turn_kl_coefs(cfg.turns, cfg.beta, method=cfg.method, stage=self.stage(step), beta1=cfg.score_beta1)

    def stage(self, step: int) -> int:
        return rloo.score_stage(step, self.cfg.score_stage1_steps) if self.cfg.method == "score" else 2

    def trained_turns_at(self, step: int) -> list[int]:
        # SCoRe stage I trains every turn: turn T for the reward, turns 1..T-1 held near the base by beta_1.
        if self.cfg.method == "score" and self.cfg.mode == "trajectory":
            return list(range(self.cfg.turns))
        return self.trained_turns

    def rollout(self, problems, step: int, chunk: int = 0):
        cfg = self.cfg
        seed = cfg.seed * 1_000_003 + step * 10_007 + self.rank * 101 + chunk * 11  # fixed per (step, rank, chunk)
        return self._episodes(self.timed, problems, turns=cfg.turns, k=cfg.k, seed=seed)

    def _episodes(self, policy, problems, *, turns: int, k: int, seed: int, progress: bool = False):
        """Episodes sampled with the run's sampling, prompt and reward settings (the model in eval mode meanwhile)."""
        from cocos.rollout import run_episodes

        cfg = self.cfg
        reward = "binary" if cfg.method == "score" and cfg.reward == "binary" else cfg.reward
        self.model.eval()
        try:
            return run_episodes(policy, problems, turns=turns, samples_per_problem=k, mode=cfg.mode,
                                temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                prompt_format=cfg.prompt_format, fewshot=cfg.fewshot, reward=reward,
                                timeout=cfg.timeout, seed=seed, progress=progress, extraction=cfg.extraction)
        finally:
            self.model.train()

    @contextlib.contextmanager
    def _autocast(self):
        with sdpa_without_cudnn(self.device):  # cuDNN attention rebuilds a graph per new shape: slow here
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    yield

    def _sequences(self, trajectories, step: int) -> list[TrainedTurn]:
        """Every trained turn of every trajectory, as a record."""
        turns = self.trained_turns_at(step)
        seqs = []
        for j, traj in enumerate(trajectories):
            for t in turns:
                if t < traj.shared_prefix_turns:  # shared turns (last-turn mode) are not trained
                    continue
                turn = traj.turns[t]
                if not turn.prompt_ids:
                    raise UserError("rollout: turns carry no token ids; the policy backend must return prompt_ids/completion_ids")
                seqs.append(TrainedTurn(turn.prompt_ids, turn.completion_ids, j, t, turn.logprobs))
        return seqs

    def _micro_batches(self, seqs: list[TrainedTurn]):
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].prompt_ids) + len(seqs[i].completion_ids))  # less padding
        mb = self.cfg.micro_batch
        for s in range(0, len(order), mb):
            idx = order[s:s + mb]
            batch = rloo.pad_sequences([seqs[i].prompt_ids for i in idx], [seqs[i].completion_ids for i in idx], self.pad_id)
            yield idx, tuple(x.to(self.device) for x in batch)

    @torch.no_grad()
    def _kl_and_entropy(self, seqs: list[TrainedTurn], n_traj: int):
        """Per-turn KL [n_traj, T] (summed over each turn's generated tokens), mean entropy, and the trainer's
        log-prob of each sequence's completion tokens (one list per entry of `seqs`, compared with the sampler's).

        All under the sampling temperature (rloo.token_logprobs), so the KL is the one between the tempered
        policy and the tempered reference, and the trainer's log-probs are the sampler's up to numerics.
        """
        kl = torch.zeros(n_traj, self.cfg.turns)
        ent_sum, ent_n = 0.0, 0.0
        temperature = self.cfg.temperature
        recomputed: list[list[float] | None] = [None] * len(seqs)
        for idx, (ids, attn, pos, cmask) in self._micro_batches(seqs):
            C = cmask.shape[1]
            with self._autocast():
                logp, ent = rloo.token_logprobs(self.model, ids, attn, pos, C, temperature=temperature, with_entropy=True)
                if self.ref_model is None:
                    with self.model.disable_adapter():
                        ref_logp, _ = rloo.token_logprobs(self.model, ids, attn, pos, C, temperature=temperature)
                else:
                    ref_logp, _ = rloo.token_logprobs(self.ref_model, ids, attn, pos, C, temperature=temperature)
            seq_kl = rloo.masked_sum(rloo.token_kl(logp, ref_logp, self.cfg.kl_estimator), cmask).cpu()
            logp_rows = logp.cpu()
            for row, i in enumerate(idx):
                kl[seqs[i].traj, seqs[i].turn] += seq_kl[row]
                n = len(seqs[i].completion_ids)
                recomputed[i] = logp_rows[row, C - n:].tolist() if n else []
            ent_sum += float((ent * cmask).sum())
            ent_n += float(cmask.sum())
        return kl, (ent_sum / ent_n if ent_n else 0.0), recomputed

    def optimize(self, trajectories, step: int, *, n_traj_total: int | None = None) -> dict:
        """Backward the RLOO loss of one chunk of trajectories (grouped by problem, k each); no optimizer step."""
        cfg, k = self.cfg, self.cfg.k
        n = len(trajectories)
        rewards = torch.tensor([traj.rewards for traj in trajectories], dtype=torch.float32)
        # A group whose k samples earned identical rewards has no reward signal: its advantages are only
        # the beta-weighted KL differences. skip_uniform_groups leaves such groups out of every forward and
        # backward pass (advantage 0), most of the compute while rewards are sparse.
        trained = torch.ones(n, dtype=torch.bool)
        if cfg.skip_uniform_groups:
            g = rewards.view(n // k, k, -1)
            trained = (g != g[:, :1]).flatten(1).any(-1).repeat_interleave(k)
        seqs = [s for s in self._sequences(trajectories, step) if trained[s.traj]]
        turn_kl, entropy, recomputed = self._kl_and_entropy(seqs, n)
        scores = rloo.trajectory_scores(rewards, turn_kl, self.kl_coefs(step), method=cfg.method, gamma=cfg.gamma,
                                        stage=self.stage(step), alpha=cfg.score_alpha)
        adv = rloo.rloo_advantages(scores.view(n // k, k)).view(n) * trained
        loss_total = 0.0
        for idx, (ids, attn, pos, cmask) in self._micro_batches(seqs):
            a = adv[[seqs[i].traj for i in idx]].to(self.device)
            with self._autocast():
                logp, _ = rloo.token_logprobs(self.model, ids, attn, pos, cmask.shape[1], temperature=cfg.temperature)
            loss = rloo.policy_loss(logp, cmask, a, n_traj=n_traj_total or n)
            loss.backward()
            loss_total += float(loss.detach())
        kl = [row if on else None for row, on in zip(turn_kl.tolist(), trained.tolist())]
        gaps = [abs(a - b) for s, r in zip(seqs, recomputed) if s.sampler_logprobs is not None
                for a, b in zip(s.sampler_logprobs, r)]
        return {"loss": loss_total, "scores": scores.tolist(), "advantages": adv.tolist(), "kl": kl,
                "entropy": entropy, "n_tokens": sum(len(s.completion_ids) for s in seqs), "n_trained": int(trained.sum()),
                "logprob_gaps": gaps, "sampled_vs_trained": [(s.sampler_logprobs, r) for s, r in zip(seqs, recomputed)]}

    def _sync_and_step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.world > 1:  # average gradients across ranks (each rank's loss is its mean over its trajectories)
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad = self.acc.reduce(p.grad, reduction="mean")
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.sync_weights()  # a backend with its own copy of the weights (vLLM) samples the next step from these
        return grad_norm

    def train_step(self) -> dict:
        """Rollouts, update and statistics of step `self.step` (0-based); advances self.step."""
        from cocos.metrics import edit_similarity

        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        idx = self.step_indices(step)
        per_rank = len(idx) // self.world
        mine = idx[self.rank * per_rank:(self.rank + 1) * per_rank]
        chunk = per_rank // cfg.grad_accum
        self.timed = _TimedPolicy(self.policy)
        rollout_time = train_time = 0.0
        trajs, out = [], {"loss": 0.0, "scores": [], "advantages": [], "kl": [], "entropy": [], "n_tokens": 0,
                          "logprob_gaps": []}
        for c in range(cfg.grad_accum):
            probs = [self.problems[i] for i in mine[c * chunk:(c + 1) * chunk]]
            t = time.perf_counter()
            self._phase(f"step {step + 1}: rollouts ({len(probs)} problems x {cfg.k})")
            got = self.rollout(probs, step, c)
            rollout_time += time.perf_counter() - t
            t = time.perf_counter()
            self._phase(f"step {step + 1}: log-probs and update")
            res = self.optimize(got, step, n_traj_total=per_rank * cfg.k)
            train_time += time.perf_counter() - t
            trajs += got
            for key in ("scores", "advantages", "kl", "logprob_gaps"):
                out[key] += res[key]
            out["loss"] += res["loss"]
            out["entropy"].append(res["entropy"])
            out["n_tokens"] += res["n_tokens"]
        t = time.perf_counter()
        grad_norm = self._sync_and_step()
        train_time += time.perf_counter() - t
        self.step += 1

        T = cfg.turns
        local = [{
            "rewards": traj.rewards, "correct": [tr.all_passed for tr in traj.turns],
            "lengths": [len(tr.completion_ids) for tr in traj.turns],
            "edit_sim": edit_similarity(traj.turns[0].code, traj.turns[-1].code) if T > 1 else 1.0,
            "score": out["scores"][i], "advantage": out["advantages"][i], "kl": out["kl"][i],
            "trained": out["kl"][i] is not None,
        } for i, traj in enumerate(trajs)]
        gaps = out["logprob_gaps"]
        timing = {"gen": self.timed.gen_time, "rollout": rollout_time, "train": train_time, "tokens": self.timed.gen_tokens,
                  "entropy": _mean(out["entropy"]), "loss": out["loss"], "gap_sum": sum(gaps), "gap_n": len(gaps),
                  "gap_max": max(gaps, default=0.0)}
        if self.world > 1:
            from accelerate.utils import gather_object

            local = gather_object(local)
            timing_all = gather_object([timing])
        else:
            timing_all = [timing]
        stats = {"step": self.step, "stage": self.stage(step), "turns": T, "lr": self.scheduler.get_last_lr()[0],
                 "loss": sum(x["loss"] for x in timing_all), "grad_norm": grad_norm}
        for t in range(T):
            stats[f"reward@{t + 1}"] = _mean(d["rewards"][t] for d in local)
            stats[f"acc@{t + 1}"] = _mean(float(d["correct"][t]) for d in local)
            stats[f"length@{t + 1}"] = _mean(d["lengths"][t] for d in local)
        stats["reward_mean"] = _mean(_mean(d["rewards"]) for d in local)
        stats["score"] = _mean(d["score"] for d in local)
        if T > 1:
            stats[f"edit_sim(1,{T})"] = _mean(d["edit_sim"] for d in local)
        # KL over the trajectories that were trained on, in total and per turn (SCoRe's collapse is a turn-1 curve)
        stats["kl"] = _mean(sum(d["kl"]) for d in local if d["trained"])
        for t in range(T):
            stats[f"kl@{t + 1}"] = _mean(d["kl"][t] for d in local if d["trained"])
        # |sampler log-prob - trainer log-prob| per trained token: ~0 when on-policy (bf16 rollouts or autocast
        # make it grow; a large value means the update is not on the distribution that sampled)
        gap_n = sum(x["gap_n"] for x in timing_all)
        stats["logprob_gap_mean"] = sum(x["gap_sum"] for x in timing_all) / gap_n if gap_n else 0.0
        stats["logprob_gap_max"] = max(x["gap_max"] for x in timing_all)
        stats["trained_frac"] = _mean(float(d["trained"]) for d in local)
        stats["entropy"] = _mean(x["entropy"] for x in timing_all)
        advs = [d["advantage"] for d in local]
        stats.update({"adv_mean": _mean(advs), "adv_std": _std(advs), "adv_min": min(advs), "adv_max": max(advs),
                      "adv_zero_frac": _mean(float(abs(a) < 1e-8) for a in advs)})
        gen = max(x["gen"] for x in timing_all)
        rollout = max(x["rollout"] for x in timing_all)
        stats.update({"time_generate": gen, "time_execute": max(0.0, rollout - gen),
                      "time_train": max(x["train"] for x in timing_all), "time_step": time.perf_counter() - t0,
                      "gen_tokens": sum(x["tokens"] for x in timing_all)})
        stats["tokens_per_s"] = stats["gen_tokens"] / gen if gen > 0 else 0.0
        stats["n_trajectories"] = len(local)
        stats["warnings"] = self.watchdog.check(stats)
        return stats

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict | None:
        """Greedy multi-turn evaluation of the live policy on the held-out set (main process)."""
        if not self.eval_problems:
            return None
        metrics = None
        if self.is_main:
            from cocos.evaluate import trajectory_record
            from cocos.metrics import compute_metrics
            from cocos.rollout import run_episodes

            cfg = self.cfg
            t0 = time.perf_counter()
            self.model.eval()
            try:
                trajs = run_episodes(self.policy, self.eval_problems, turns=cfg.eval_turns or cfg.turns,
                                     temperature=0.0, max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                                     prompt_format=cfg.prompt_format, fewshot=cfg.fewshot, reward=cfg.reward,
                                     timeout=cfg.timeout, seed=0, progress=self.progress, extraction=cfg.extraction)
            finally:
                self.model.train()
            metrics = compute_metrics(trajs, self.eval_problems)
            metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
            metrics["step"] = step
            metrics["extraction"] = cfg.extraction  # the rule for answers without [DONE] (cocos.prompts.extract_code)
            d = self.out / "eval" / f"step_{step}"
            d.mkdir(parents=True, exist_ok=True)
            with open(d / "samples.jsonl", "w", encoding="utf-8") as f:
                for traj in trajs:
                    f.write(json.dumps(trajectory_record(traj), ensure_ascii=False) + "\n")
            (d / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            self._log_scalars({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step)
        self.acc.wait_for_everyone()
        return metrics

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        root = self.out / "checkpoints"
        final = root / f"step_{self.step}"
        tmp = root / f".tmp-step_{self.step}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self._save_model(tmp)
            self.tokenizer.save_pretrained(str(tmp))
            torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "data_order": {"seed": self.cfg.seed, "n_problems": len(self.problems),
                                       "problems_per_step": self.cfg.problems_per_step,
                                       "next_indices": self.step_indices(self.step),
                                       "task_ids": [p.task_id for p in self.problems]},
                        "watchdog": self.watchdog.history[-4 * self.cfg.watch_window:],
                        "config": self.cfg.to_dict(), "world_size": self.world}, tmp / STATE_FILE)
        self.acc.wait_for_everyone()
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        with contextlib.suppress(ImportError):
            import numpy as np

            rng["numpy"] = np.random.get_state()
        torch.save(rng, tmp / f"rng_rank{self.rank}.pt")
        self.acc.wait_for_everyone()
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # atomic: a reader sees no checkpoint or a whole one
            for old in checkpoint_steps(self.out)[:-self.cfg.save_total_limit or None]:
                shutil.rmtree(root / f"step_{old}", ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def _save_model(self, path: Path) -> None:
        if self.cfg.lora:
            self.model.save_pretrained(str(path / "adapter"))
            merged = copy.deepcopy(self.model).merge_and_unload()  # plain weights for `cocos eval --model`
            merged.save_pretrained(str(path))
        else:
            self.model.save_pretrained(str(path))

    def _load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        if state["data_order"]["n_problems"] != len(self.problems):
            raise UserError(f"--resume: the checkpoint was trained on {state['data_order']['n_problems']} problems, "
                            f"this config gives {len(self.problems)}; resume with the run's own config.yaml")
        if self.cfg.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(path / "adapter" / "adapter_model.safetensors")))
        else:
            from transformers import AutoModelForCausalLM

            saved = AutoModelForCausalLM.from_pretrained(str(path), dtype=next(self.model.parameters()).dtype)
            self.model.load_state_dict(saved.state_dict())
            del saved
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.watchdog.history = list(state.get("watchdog", []))
        rng_file = path / f"rng_rank{self.rank}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, map_location="cpu", weights_only=False)
            random.setstate(rng["python"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            if "numpy" in rng:
                import numpy as np

                np.random.set_state(rng["numpy"])
        if hasattr(self.policy, "sync_weights"):
            self.policy.sync_weights()

    # ---- logging --------------------------------------------------------------------------------
    def _phase(self, text: str) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.set_postfix_str(text)

    def _log_scalars(self, scalars: dict, step: int) -> None:
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def _log_step(self, stats: dict) -> None:
        if not self.is_main:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")
        self._log_scalars({f"train/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}, stats["step"])

    def _trim_log(self) -> None:
        """On resume, drop log lines of steps after the checkpoint (they will be redone)."""
        path = self.out / "log.jsonl"
        if self.is_main and path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= self.step]
            path.write_text("".join(ln + "\n" for ln in keep))

    # ---- the loop -------------------------------------------------------------------------------
    def _out_of_time(self, started: float) -> bool:
        """max_minutes reached (the same answer on every rank: any rank over the limit stops them all)."""
        if not self.cfg.max_minutes:
            return False
        over = time.time() - started > 60 * self.cfg.max_minutes
        if self.world > 1:
            from accelerate.utils import gather_object

            over = any(gather_object([over]))
        if over and self.is_main and self._bar is not None:
            self._bar.write(f"max_minutes={self.cfg.max_minutes:g} reached after step {self.step}: saving and evaluating")
        return over

    def train(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._trim_log()
        result = {"eval": {}}
        if cfg.eval_at_start and self.step == 0:
            result["eval"][0] = self.evaluate(0)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and self.is_main))
        self._bar = bar
        stats = None
        started = time.time()
        while self.step < cfg.max_steps and not self._out_of_time(started):
            stats = self.train_step()
            release_free_memory()
            self._log_step(stats)
            T = cfg.turns
            bar.set_postfix_str(" ".join(f"r{t}={stats[f'reward@{t}']:.3f}" for t in range(1, T + 1))
                                + f" kl={stats['kl']:.3f} {stats['time_step']:.0f}s/step")
            bar.update(1)
            if self.is_main:
                for w in stats["warnings"]:
                    bar.write(f"warning (step {self.step}): {w}")
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                result["eval"][self.step] = self.evaluate(self.step)
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint()
        bar.close()
        self._bar = None
        if stats is not None or not checkpoint_steps(self.out):
            self.save_checkpoint()
        if self.eval_problems and self.step not in result["eval"]:
            result["eval"][self.step] = self.evaluate(self.step)
        result["last"] = stats
        result["checkpoint"] = str(self.out / "checkpoints" / f"step_{self.step}")
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        return result


# ---- entry point for `cocos train` --------------------------------------------------------------
def run_train(config: str | None, out: str, *, overrides=(), max_steps: int | None = None, resume: bool = False,
              progress: bool = True) -> dict:
    from cocos.train.config import load_config

    out_dir = Path(out)
    if config is None:
        if not (resume and (out_dir / "config.yaml").exists()):
            raise UserError("--config: pass a YAML file (e.g. configs/cocos_cpu.yaml), or --resume a run folder")
        config = out_dir / "config.yaml"
    cfg = load_config(config, list(overrides), max_steps=max_steps)
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress)
    if trainer.is_main:
        print(f"cocos train: {cfg.method} on {cfg.dataset} {cfg.split} ({len(trainer.problems)} problems), "
              f"{cfg.problems_per_step} problems x k={cfg.k} x {cfg.turns} turns per step, steps {trainer.step}->"
              f"{cfg.max_steps}, {trainer.world} process(es), autocast {trainer.autocast_dtype or 'off'}, "
              f"generation backend {trainer.policy.backend}; run folder {out_dir}", flush=True)
    result = trainer.train()
    if trainer.is_main and result.get("last"):
        s = result["last"]
        print(f"done: step {trainer.step}, " + ", ".join(f"reward@{t}={s[f'reward@{t}']:.3f}" for t in range(1, cfg.turns + 1))
              + f", kl={s['kl']:.4f}; checkpoint {result['checkpoint']}", flush=True)
    return result
