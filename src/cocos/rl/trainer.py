"""The CoCoS trainer loop: rollouts -> rewards -> RLOO update, with evaluation, checkpoints and logs.

    cfg = load_config("configs/cocos_cpu.yaml", overrides=["max_steps=2"])
    Trainer(cfg, "runs/x").train()          # or: cocos train --config ... --out runs/x [--resume]

One optimizer step (`train_step`), chunk by chunk (grad_accum chunks of this rank's share of the step's problems):
  1. take the step's `problems_per_step` problems in the run's data order; each rank takes its share;
  2. rollout: k trajectories of T turns per problem (cocos.episodes.rollout.run_episodes, sandboxed rewards);
  3. batch: rewards, the groups that train, the trained turns' tokens (cocos.rl.batch.Batch, the step's `Method`);
  4. update: log-probs of every trained turn's completion under the reference and the policy -> per-turn KL ->
     scores -> the leave-one-out advantage of each trained turn: its trajectory's score's (`advantage: rloo`) or
     its return-to-go's (`per-turn`, docs/credit.md) (cocos.rl.objective); loss = -(1/N) sum A * sum log-probs,
     backward (cocos.rl.passes); then, once per step, gradients averaged across ranks, clipped; AdamW step; LR
     schedule step (cocos.rl.distributed: DDP, DeepSpeed ZeRO, mixed precision);
  5. stats: one log.jsonl line from the batches (cocos.rl.monitor), gathered over the ranks.

The parts: cocos.rl.models (policy, reference, LoRA), cocos.rl.distributed (accelerate), cocos.rl.batch (what a
step carries), cocos.rl.passes (log-probs, KL, loss), cocos.rl.checkpoint, cocos.rl.curriculum, cocos.rl.monitor.

Run folder (layout: cocos.eval.runs):
  config.yaml                 the resolved TrainConfig
  log.jsonl                   one line per step (rewards, accuracy per turn, KL, entropy, advantages,
                              lengths, timings, tokens/s, watchdog warnings)
  tensorboard/                TensorBoard events (W&B too with `wandb: true`)
  eval/step_N/                metrics.json (cocos.eval.metrics) + samples.jsonl of the periodic evaluation
  checkpoints/step_N/         HF model + tokenizer (merged weights with LoRA, adapter in adapter/),
                              trainer_state.pt (optimizer, scheduler, step, data order), rng_rank*.pt;
                              written under a temporary name, then renamed: never half a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path

import torch

from cocos.errors import UserError
from cocos.eval import runs
from cocos.eval.runs import checkpoint_steps
from cocos.generation.device import release_free_memory
from cocos.rl import checkpoint, curriculum
from cocos.rl.batch import Batch, make_batch
from cocos.rl.config import TrainConfig, save_config
from cocos.rl.distributed import Distributed, make_accelerator
from cocos.rl.models import load_models
from cocos.rl.monitor import (TimedPolicy, Watchdog, batch_trajectory_stats, kl_text, mean, progress_text, step_stats,
                              turn_advantage_stats)
from cocos.rl.objective import method_at
from cocos.rl.passes import PassSetup, grouped_passes, plain_passes


class Trainer:
    # ---- setup ----------------------------------------------------------------------------------
    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
                 policy=None, problems=None, eval_problems=None, accelerator=None):
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        self.dist = Distributed(accelerator or make_accelerator())
        check_split(cfg, self.world)
        existing = check_run_folder(self.out, resume)
        seed_everything(cfg.seed + self.rank)
        self.problems, self.eval_problems = load_data(cfg, problems, eval_problems)
        self.models = load_models(cfg, policy, zero3=self.dist.zero3, verbose=self.is_main)
        self.timed = TimedPolicy(self.policy)  # generation time of the current step (reset by train_step)
        if cfg.curriculum_k:
            def turn1(problems, k, seed):  # the starting model's turn-1 samples
                return self.episodes(self.policy, problems, turns=1, k=k, seed=seed,
                                     progress=self.progress and self.is_main)

            self.problems = curriculum.keep_problems(cfg, self.problems, self.out, turn1, resume=resume,
                                                     is_main=self.is_main)
        optimizer, scheduler = build_optimizer(cfg, self.models.model)
        self.models, self.optimizer, self.scheduler = self.dist.prepare(cfg, self.models, optimizer, scheduler)
        self.step = 0
        self.watchdog = Watchdog(cfg.watch_window, cfg.watch_kl_max, cfg.watch_edit_sim, cfg.watch_copy,
                                 cfg.watch_hardcoded)
        if resume:
            self.step, self.watchdog.history = checkpoint.load(
                runs.checkpoint_dir(self.out, existing[-1]), lora=cfg.lora, n_problems=len(self.problems),
                dist=self.dist, models=self.models, optimizer=self.optimizer, scheduler=self.scheduler)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.dist.wait()
        self._writers()

    # the run's models and processes, by the names callers read (tr.model, tr.policy, ...)
    rank = property(lambda self: self.dist.rank)
    world = property(lambda self: self.dist.world, doc="the number of processes")
    is_main = property(lambda self: self.dist.is_main)
    model = property(lambda self: self.models.model, doc="the trained model, as accelerate wrapped it")
    unwrapped = property(lambda self: self.models.unwrapped, doc="the trained model without DDP's / DeepSpeed's wrapper")
    ref_model = property(lambda self: self.models.ref_model, doc="the frozen reference (None with LoRA: adapters off)")
    policy = property(lambda self: self.models.policy, doc="what generates: rollouts and evaluation")
    tokenizer = property(lambda self: self.models.tokenizer)
    device = property(lambda self: self.models.device)
    pad_id = property(lambda self: self.models.pad_id)
    acc = property(lambda self: self.dist.acc, doc="the accelerate Accelerator")
    autocast_dtype = property(lambda self: self.dist.autocast_dtype, doc="the passes' autocast dtype (None: off)")

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

    def my_chunks(self, step: int) -> list[list]:
        """This rank's share of the step's problems, in cfg.grad_accum chunks."""
        idx = self.step_indices(step)
        per_rank = len(idx) // self.world
        mine = idx[self.rank * per_rank:(self.rank + 1) * per_rank]
        chunk = per_rank // self.cfg.grad_accum
        return [[self.problems[i] for i in mine[c * chunk:(c + 1) * chunk]] for c in range(self.cfg.grad_accum)]

    # ---- one step: rollout -> batch -> update -> stats ------------------------------------------
    def train_step(self) -> dict:
        """Rollouts, update and statistics of step `self.step` (0-based); advances self.step."""
        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        chunks = self.my_chunks(step)
        self.timed = TimedPolicy(self.policy)
        rollout_time = train_time = 0.0
        n_traj = sum(map(len, chunks)) * cfg.k  # this rank's trajectories of the step: the loss is their mean
        batches: list[Batch] = []
        for c, probs in enumerate(chunks):
            t = time.perf_counter()
            self._phase(f"step {step + 1}: rollouts ({len(probs)} problems x {cfg.k})")
            trajectories = self.rollout(probs, step, c)
            rollout_time += time.perf_counter() - t
            t = time.perf_counter()
            self._phase(f"step {step + 1}: log-probs and update")
            with self.dist.local_gradients():
                batches.append(self.update(self.batch(trajectories, step), n_traj_total=n_traj,
                                           last_chunk=c == len(chunks) - 1))
            train_time += time.perf_counter() - t
        t = time.perf_counter()
        grad_norm = self.sync_and_step()
        train_time += time.perf_counter() - t
        self.step += 1
        return self.step_log(batches, grad_norm, rollout_time=rollout_time, train_time=train_time, started=t0)

    def rollout(self, problems, step: int, chunk: int = 0):
        cfg = self.cfg
        seed = cfg.seed * 1_000_003 + step * 10_007 + self.rank * 101 + chunk * 11  # fixed per (step, rank, chunk)
        with self.dist.whole_weights():
            return self.episodes(self.timed, problems, turns=cfg.turns, k=cfg.k, seed=seed)

    def episodes(self, policy, problems, *, turns: int, k: int, seed: int, progress: bool = False):
        """Episodes sampled with the run's rollout settings (the model in eval mode meanwhile)."""
        from cocos.episodes.rollout import run_episodes

        self.model.eval()
        try:
            return run_episodes(policy, problems, self.cfg.rollout_settings(turns=turns), samples_per_problem=k,
                                seed=seed, progress=progress)
        finally:
            self.model.train()

    def batch(self, trajectories, step: int) -> Batch:
        """The step's batch of a chunk of trajectories (grouped by problem, k each)."""
        cfg = self.cfg
        skip = cfg.skip_uniform_groups and not self.dist.lockstep  # DeepSpeed trains every group (lockstep)
        return make_batch(trajectories, method_at(cfg, step), advantage=cfg.advantage, k=cfg.k,
                          copy_penalty=cfg.copy_penalty, skip_uniform_groups=skip)

    def update(self, batch: Batch, *, n_traj_total: int | None = None, last_chunk: bool = True) -> Batch:
        """Backward the loss of one batch (no optimizer step) -> the batch with its KL, advantages, loss, entropy.

        logprob_passes=shared-prefix: group by group, one policy pass with gradient (its detached log-probs give the
        KL) and one reference pass, each running the k samples' common prompt prefix once (cocos.rl.passes).
        plain: every trained sequence padded in micro-batches, three passes (reference, policy, policy with
        gradient). Same loss and gradients (tests/test_passes.py). n_traj_total: the trajectories of the step on
        this rank (the loss's mean is over them); last_chunk: the step's last backward comes in this batch."""
        cfg = self.cfg
        setup = PassSetup(models=self.models, dist=self.dist, pad_id=self.pad_id, device=self.device,
                          temperature=cfg.temperature, micro_batch=cfg.micro_batch, kl_estimator=cfg.kl_estimator,
                          k=cfg.k, turns=cfg.turns)
        run = grouped_passes if cfg.logprob_passes == "shared-prefix" else plain_passes
        return batch.measured(run(setup, batch.seqs, batch.rewards, batch.advantages_of,
                                  n_traj_total or len(batch.trajectories), last_chunk))

    def optimize(self, trajectories, step: int, *, n_traj_total: int | None = None, last_chunk: bool = True) -> Batch:
        """batch + update of one chunk of trajectories: its numbers by name, result["advantages"], ... (Batch)."""
        return self.update(self.batch(trajectories, step), n_traj_total=n_traj_total, last_chunk=last_chunk)

    def sync_and_step(self) -> float:
        """Reduce, clip, step (cocos.rl.distributed) -> the gradient norm; the generation backend gets the weights."""
        grad_norm = self.dist.step(self.optimizer, self.scheduler, self.cfg.max_grad_norm)
        with self.dist.whole_weights():
            self.policy.sync_weights()  # a backend with its own copy of the weights (vLLM) samples the next step from these
        return grad_norm

    def step_log(self, batches: list[Batch], grad_norm: float, *, rollout_time: float, train_time: float,
                 started: float) -> dict:
        """The log line of the step just taken (self.step: its 1-based number), over every rank's batches."""
        cfg = self.cfg
        local = [row for b in batches for row in batch_trajectory_stats(b, self.problems_by_id)]
        gaps = [g for b in batches for g in b.logprob_gaps()]
        timing = {"gen": self.timed.gen_time, "rollout": rollout_time, "train": train_time,
                  "tokens": self.timed.gen_tokens, "entropy": mean(b.entropy for b in batches),
                  "loss": sum(b.loss for b in batches), "gap_sum": sum(gaps), "gap_n": len(gaps),
                  "gap_max": max(gaps, default=0.0)}
        local, timing_all = self.dist.gather(local), self.dist.gather([timing])
        stats = {"step": self.step, "stage": batches[0].method.stage, "turns": cfg.turns,  # SCoRe's stage, or 2
                 "lr": self.scheduler.get_last_lr()[0], "loss": sum(x["loss"] for x in timing_all),
                 "grad_norm": grad_norm}
        stats.update(step_stats(local, timing_all, cfg.turns, time_step=time.perf_counter() - started, k=cfg.k))
        stats.update(turn_advantage_stats(local, cfg.turns))  # under rloo equal on every trained turn
        stats["warnings"] = self.watchdog.check(stats)
        self._last_trajectories = local
        return stats

    @property
    def problems_by_id(self) -> dict:
        """The training problems by task id: the monitors read their shown tests."""
        return {p.task_id: p for p in self.problems}

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict | None:
        """Greedy multi-turn evaluation of the live policy on the held-out set (main process): eval/step_N/."""
        if not self.eval_problems:
            return None
        with self.dist.whole_weights():  # every rank (ZeRO-3 gathers); the main process evaluates
            metrics = self._evaluate_main(step) if self.is_main else None
        self.dist.wait()
        return metrics

    def _evaluate_main(self, step: int) -> dict:
        from cocos.eval.evaluate import evaluate_policy

        cfg = self.cfg
        settings = cfg.rollout_settings(turns=cfg.eval_turns or cfg.turns, temperature=0.0, top_p=1.0, mode="trajectory",
                                        max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens)
        self.model.eval()
        try:  # all problems in one batch of episodes (the backend batches the generation itself)
            metrics, _ = evaluate_policy(self.policy, self.eval_problems, settings, out=runs.eval_dir(self.out, step),
                                         batch_size=len(self.eval_problems), seed=0, progress=self.progress,
                                         extra={"step": step})
        finally:
            self.model.train()
        self._log_scalars({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step)
        return metrics

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        cfg = self.cfg
        data_order = {"seed": cfg.seed, "n_problems": len(self.problems), "problems_per_step": cfg.problems_per_step,
                      "next_indices": self.step_indices(self.step), "task_ids": [p.task_id for p in self.problems]}
        return checkpoint.save(self.out, self.step, cfg=cfg, dist=self.dist, models=self.models,
                               optimizer=self.optimizer, scheduler=self.scheduler, data_order=data_order,
                               watchdog_history=self.watchdog.history)

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
        runs.append_log(self.out, stats)
        runs.append_rollouts(self.out, stats["step"], getattr(self, "_last_trajectories", []))
        self._log_scalars({f"train/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}, stats["step"])

    def _trim_log(self) -> None:
        """On resume, drop log lines of steps after the checkpoint (they will be redone)."""
        if self.is_main:
            runs.trim_log(self.out, self.step)
            runs.trim_log(self.out, self.step, runs.ROLLOUTS)

    # ---- the loop -------------------------------------------------------------------------------
    def _out_of_time(self, started: float) -> bool:
        """max_minutes reached (the same answer on every rank: any rank over the limit stops them all)."""
        if not self.cfg.max_minutes:
            return False
        over = any(self.dist.gather([time.time() - started > 60 * self.cfg.max_minutes]))
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
            bar.set_postfix_str(progress_text(stats))
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
        result["checkpoint"] = str(runs.checkpoint_dir(self.out, self.step))
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        return result


# ---- setup --------------------------------------------------------------------------------------
def check_split(cfg: TrainConfig, world: int) -> None:
    """The step's problems split evenly across the processes, and each process's into grad_accum chunks."""
    if cfg.problems_per_step % world:
        raise UserError(f"problems_per_step: {cfg.problems_per_step} does not split evenly across {world} processes")
    if (cfg.problems_per_step // world) % cfg.grad_accum:
        raise UserError(f"grad_accum: {cfg.grad_accum} does not divide the {cfg.problems_per_step // world} "
                        "problems of each process")


def check_run_folder(out: Path, resume: bool) -> list[int]:
    """The checkpoint steps of run folder `out`; a folder holding a run needs --resume, --resume needs one."""
    existing = checkpoint_steps(out)
    if out.exists() and any(out.iterdir()) and not resume and (existing or (out / runs.LOG).exists()):
        raise UserError(f"--out {out}: holds a run already; pass --resume to continue it or choose a new folder")
    if resume and not existing:
        raise UserError(f"--resume: no checkpoint in {out}/checkpoints to resume from")
    return existing


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)


def load_data(cfg: TrainConfig, problems=None, eval_problems=None) -> tuple[list, list]:
    """(training problems, evaluation problems): the ones given, else the config's datasets."""
    from cocos.data.problems import load_problems

    train = list(problems) if problems is not None else load_problems(cfg.dataset, cfg.split, cfg.train_limit)
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    if not train:
        raise UserError(f"dataset: {cfg.dataset} {cfg.split} has no problems")
    if eval_problems is not None:
        return train, list(eval_problems)
    if cfg.eval_limit == 0:
        return train, []
    return train, load_problems(cfg.eval_dataset, cfg.eval_split, cfg.eval_limit)


def build_optimizer(cfg: TrainConfig, model) -> tuple:
    """AdamW over the trainable parameters and the LR schedule (cfg.schedule, warmup_steps, max_steps)."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=max(1, cfg.max_steps))
    return optimizer, scheduler


# ---- entry point for `cocos train` --------------------------------------------------------------
def run_train(config: str | None, out: str, *, overrides=(), max_steps: int | None = None, resume: bool = False,
              progress: bool = True) -> dict:
    from cocos.rl.config import load_config

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
              + f", kl={kl_text(s['kl'], 4)}; checkpoint {result['checkpoint']}", flush=True)
    return result
