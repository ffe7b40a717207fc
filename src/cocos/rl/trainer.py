"""The CoCoS trainer loop: rollouts -> rewards -> RLOO update, with evaluation, checkpoints and logs.

    cfg = load_config("configs/cocos_cpu.yaml", overrides=["max_steps=2"])
    Trainer(cfg, "runs/x").train()          # or: cocos train --config ... --out runs/x [--resume]

One optimizer step:
  1. take the step's `problems_per_step` problems in the run's data order; each rank takes its share;
  2. rollout: k trajectories of T turns per problem (cocos.episodes.rollout.run_episodes, sandboxed rewards);
  3. log-probs of every trained turn's completion under the reference (no grad) and the policy (no grad)
     -> per-turn KL -> scores -> the leave-one-out advantage of each trained turn: its trajectory's score's
     (`advantage: rloo`) or its return-to-go's (`per-turn`, docs/credit.md) (cocos.rl.objective, the step's
     `Method`);
  4. policy forward with gradient in micro-batches, loss = -(1/N) sum A * sum log-probs, backward;
  5. gradients averaged across ranks, clipped; AdamW step; LR schedule step.

Processes: the policy, its optimizer and scheduler go through `accelerator.prepare`, so DDP, DeepSpeed ZeRO and
mixed precision are the user's `accelerate config` (recipes: configs/accelerate/, docs/scale_out.md).
  - DDP: a step's backwards accumulate gradients locally (accelerate's no_sync), then one synced backward of a
    zero loss reduces them: one reduction per step, however many groups each rank trained.
  - DeepSpeed: every group trains (one backward each, uniform groups with advantage 0) and its accumulation
    steps are the groups per rank, so that the engine's boundary is the step's last backward, on every rank.

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
import copy
import os
import random
import time
from pathlib import Path

import torch

from cocos.errors import UserError
from cocos.eval import runs
from cocos.eval.runs import checkpoint_steps
from cocos.generation.device import bf16_autocast, name_deepspeed_accelerator, sdpa_without_cudnn
from cocos.rl import checkpoint, curriculum
from cocos.rl.batch import Batch, Measured, make_batch, trained_sequences
from cocos.rl.config import TrainConfig, save_config
from cocos.rl.monitor import (TimedPolicy, Watchdog, batch_trajectory_stats, mean, release_free_memory, step_stats,
                              turn_advantage_stats)
from cocos.rl.objective import method_at
from cocos.rl.passes import allow_checkpointing_with_prefix, grouped_passes, plain_passes


# ---- the trainer --------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
                 policy=None, problems=None, eval_problems=None, accelerator=None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        # broadcast_buffers=False: DDP would otherwise broadcast buffers in every forward, a collective that needs
        # the same number of forwards on every rank (ranks train different numbers of groups). The scheduler
        # steps once per optimizer step (accelerate's default steps it once per process).
        # cpu=True makes `accelerate launch --multi_gpu` give gloo processes on a machine without GPUs; DeepSpeed
        # (its CPU accelerator there) needs it off.
        cpu = not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") != "true"
        # Precision: what `accelerate launch` configured (its config's mixed_precision: 'no' for DDP, where cocos
        # runs its own autocast; bf16 for DeepSpeed's engine). A TRL fit earlier in this process leaves its own
        # precision in accelerate's shared state, which a plain Accelerator() would inherit: its bf16 autocast
        # would then wrap the policy's forward beside cocos' own, and the trainer's passes would no longer be
        # the ones its config asks for.
        from accelerate.state import AcceleratorState

        wanted = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if accelerator is None and AcceleratorState._shared_state.get("_mixed_precision", wanted) != wanted:
            AcceleratorState._reset_state()  # the process group (PartialState) stays
        self.acc = accelerator or Accelerator(cpu=cpu, mixed_precision=wanted, step_scheduler_with_optimizer=False,
                                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        from accelerate.utils import DistributedType

        self.deepspeed = self.acc.distributed_type == DistributedType.DEEPSPEED
        self.zero3 = self.deepspeed and self.acc.state.deepspeed_plugin.zero_stage == 3
        if cfg.problems_per_step % self.world:
            raise UserError(f"problems_per_step: {cfg.problems_per_step} does not split evenly across {self.world} processes")
        if (cfg.problems_per_step // self.world) % cfg.grad_accum:
            raise UserError(f"grad_accum: {cfg.grad_accum} does not divide the {cfg.problems_per_step // self.world} "
                            "problems of each process")
        self.is_main = self.acc.is_main_process

        existing = checkpoint_steps(self.out)
        if self.out.exists() and any(self.out.iterdir()) and not resume and (existing or (self.out / runs.LOG).exists()):
            raise UserError(f"--out {self.out}: holds a run already; pass --resume to continue it or choose a new folder")
        if resume and not existing:
            raise UserError(f"--resume: no checkpoint in {self.out}/checkpoints to resume from")

        self._seed_everything(cfg.seed + self.rank)
        self._load_data(problems, eval_problems)
        self._load_models(policy)
        self.timed = TimedPolicy(self.policy)  # generation time of the current step (reset by train_step)
        if cfg.curriculum_k:
            def turn1(problems, k, seed):  # the starting model's turn-1 samples
                return self._episodes(self.policy, problems, turns=1, k=k, seed=seed,
                                      progress=self.progress and self.is_main)

            self.problems = curriculum.keep_problems(cfg, self.problems, self.out, turn1, resume=resume,
                                                     is_main=self.is_main)
        self._build_optimizer()
        self._prepare()
        self.step = 0
        self.watchdog = Watchdog(cfg.watch_window, cfg.watch_kl_max, cfg.watch_edit_sim, cfg.watch_copy)
        if resume:
            checkpoint.load(self, runs.checkpoint_dir(self.out, existing[-1]))
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
        from cocos.data.problems import load_problems

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
            from cocos.generation.policy import load_policy

            # The engine reads plain weights once: LoRA adapters and ZeRO-3 shards need HF generate.
            backend = "hf" if (cfg.lora or self.zero3) and cfg.backend in ("auto", "engine") else cfg.backend
            policy = load_policy(cfg.model, dtype=cfg.dtype, backend=backend, rollout_dtype=cfg.rollout_dtype,
                                 verbose=self.is_main)
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.device = policy.device
        name_deepspeed_accelerator(self.device)
        model = policy.model
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora_target_modules
            targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                     target_modules=targets, task_type="CAUSAL_LM"))
            # The engine reads plain nn.Linear weights and would ignore the adapters: generate through HF.
            from cocos.generation.policy import Policy

            self.policy = Policy(model, policy.tokenizer, name=getattr(policy, "name", ""), source=getattr(policy, "source", ""),
                                 path=getattr(policy, "path", ""), backend="hf")
            self.ref_model = None  # reference = the same model with adapters disabled
        elif hasattr(next(model.parameters()), "ds_id"):
            # ZeRO-3: from_pretrained already partitioned the policy (transformers' zero.Init), so a copy would copy
            # empty shards; the reference loads again from the same weights, partitioned the same way.
            from cocos.generation.policy import load_policy

            self.ref_model = load_policy(cfg.model, dtype=cfg.dtype, backend="hf", verbose=False).model
            self.ref_model.eval().requires_grad_(False)
        else:
            # Full fine-tuning: a frozen copy of the starting weights is the reference.
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.gradient_checkpointing:  # after the reference's copy: the frozen reference keeps nothing to recompute
            base = model.get_base_model() if cfg.lora else model
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x: non-reentrant by default
                base.activation_checkpointing_enable()
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.logprob_passes == "shared-prefix" and not allow_checkpointing_with_prefix(base):
                raise UserError("gradient_checkpointing: with logprob_passes=shared-prefix it needs a transformers "
                                "whose layers can keep a read-only cache under checkpointing (5.x); set "
                                "logprob_passes=plain, or upgrade transformers")
        self.model = model
        self.model.train()
        self.autocast_dtype = torch.bfloat16 if bf16_autocast(cfg.autocast, self.device) else None
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

    def _prepare(self) -> None:
        """Policy, optimizer and scheduler through accelerate; the reference model for inference only."""
        from accelerate.utils import DistributedType

        acc, cfg = self.acc, self.cfg
        if acc.distributed_type == DistributedType.FSDP:
            raise UserError("accelerate config: FSDP is not supported by cocos train yet (generation needs the whole "
                            "weights on every rank); use DeepSpeed ZeRO-3 (configs/accelerate/zero3.yaml) to shard")
        # DeepSpeed counts a step's backwards (its accumulation steps; ZeRO-2/3 also reduce in every one and ZeRO-3
        # gathers weights in every forward, so ranks must run the same passes): every group trains, one backward each.
        self.lockstep = self.deepspeed
        if self.deepspeed:
            import deepspeed
            from packaging.version import Version

            if acc.state.deepspeed_plugin.zero_stage == 2 and Version(deepspeed.__version__) < Version("0.19"):
                raise UserError(f"deepspeed {deepspeed.__version__}: its ZeRO-2 keeps only the last backward's "
                                "gradient of an accumulation (measured with 0.18.2); pip install 'deepspeed>=0.19'")
            if cfg.logprob_passes != "shared-prefix":
                raise UserError("logprob_passes: DeepSpeed needs shared-prefix (one backward per group); set it back")
            groups = cfg.problems_per_step // self.world
            ds = acc.state.deepspeed_plugin.deepspeed_config
            if ds.get("gradient_accumulation_steps", "auto") not in ("auto", groups):
                raise UserError(f"DeepSpeed config: gradient_accumulation_steps must be 'auto' or {groups} (the "
                                "groups each process trains per step: problems_per_step / processes)")
            ds["gradient_accumulation_steps"] = groups
            acc.gradient_accumulation_steps = groups
            ds["train_micro_batch_size_per_gpu"] = cfg.k  # one backward = one group of k samples
            if ds.get("gradient_clipping", "auto") == "auto":
                ds["gradient_clipping"] = cfg.max_grad_norm  # 0: off
        self.model, self.optimizer, self.scheduler = acc.prepare(self.model, self.optimizer, self.scheduler)
        if self.ref_model is not None and self.deepspeed:
            from trl.models.utils import prepare_deepspeed  # ZeRO-3: sharded like the policy; else stage 0, whole

            self.ref_model = prepare_deepspeed(self.ref_model, acc)

    @property
    def unwrapped(self):
        """The policy model itself (without its DDP / DeepSpeed wrapper)."""
        return self.acc.unwrap_model(self.model)

    @contextlib.contextmanager
    def _whole_weights(self):
        """Generation needs the whole weights: ZeRO-3 gathers them on every rank meanwhile (TRL's way: a full copy
        of the weights per rank for the rollout); a no-op otherwise. Every rank must enter it."""
        if not self.zero3:
            yield
            return
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(self.model, self.acc):
            yield

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

    # ---- one step -------------------------------------------------------------------------------
    def rollout(self, problems, step: int, chunk: int = 0):
        cfg = self.cfg
        seed = cfg.seed * 1_000_003 + step * 10_007 + self.rank * 101 + chunk * 11  # fixed per (step, rank, chunk)
        with self._whole_weights():
            return self._episodes(self.timed, problems, turns=cfg.turns, k=cfg.k, seed=seed)

    def _episodes(self, policy, problems, *, turns: int, k: int, seed: int, progress: bool = False):
        """Episodes sampled with the run's rollout settings (the model in eval mode meanwhile)."""
        from cocos.episodes.rollout import run_episodes

        self.model.eval()
        try:
            return run_episodes(policy, problems, self.cfg.rollout_settings(turns=turns), samples_per_problem=k,
                                seed=seed, progress=progress)
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

    _sequences = staticmethod(trained_sequences)  # -> cocos.rl.batch.trained_sequences

    def optimize(self, trajectories, step: int, *, n_traj_total: int | None = None, last_chunk: bool = True) -> Batch:
        """Backward the loss of one chunk of trajectories (grouped by problem, k each); no optimizer step -> its
        Batch (cocos.rl.batch), with the per-turn KL, the advantages, the loss and the entropy the passes measured.

        logprob_passes=shared-prefix: group by group, one policy pass with gradient (its detached log-probs give the
        KL) and one reference pass, each running the k samples' common prompt prefix once (cocos.rl.passes).
        plain: every trained sequence padded in micro-batches, three passes (reference, policy, policy with
        gradient). Same loss and gradients (tests/test_passes.py).

        The advantages come from one function, objective.advantages (cfg.advantage), which the passes call through
        the batch's `advantages_of` and whose numbers they return: the log reads what the loss used."""
        cfg = self.cfg
        skip = cfg.skip_uniform_groups and not self.lockstep  # DeepSpeed trains every group (lockstep)
        batch = make_batch(trajectories, method_at(cfg, step), advantage=cfg.advantage, k=cfg.k,
                           copy_penalty=cfg.copy_penalty, skip_uniform_groups=skip)
        run = grouped_passes if cfg.logprob_passes == "shared-prefix" else plain_passes
        return batch.measured(Measured(*run(self, batch.seqs, batch.rewards, batch.advantages_of,
                                            n_traj_total or len(trajectories), last_chunk)))

    @contextlib.contextmanager
    def _reference(self):
        """The frozen reference model (with LoRA: the policy with its adapters off)."""
        if self.ref_model is None:
            with self.unwrapped.disable_adapter():
                yield self.model
        else:
            yield self.ref_model

    @contextlib.contextmanager
    def _local_gradients(self):
        """The step's passes: under DDP their backwards accumulate gradients on this rank only (no_sync must hold
        during the forwards too). DeepSpeed is told per backward (`backward`'s `last`)."""
        with contextlib.nullcontext() if self.deepspeed else self.acc.no_sync(self.model):
            yield

    def backward(self, loss: torch.Tensor, *, last: bool = False) -> None:
        """One backward of the step's passes (inside `_local_gradients`). `last`: the step's last group; under
        DeepSpeed its backward is the accumulation boundary, where the engine reduces, clips and steps."""
        if self.deepspeed:
            self.acc.sync_gradients = last
            self.acc.backward(loss, scale_wrt_gas=False)  # the loss is already the step's mean, not one micro-batch's
        else:
            self.acc.sync_gradients = False
            self.acc.backward(loss)

    def _reduce_gradients(self) -> None:
        """DDP: one synced backward of a zero loss on a 1-token forward all-reduces (averages) the accumulated
        gradients. It is the same call on every rank, whether or not this rank trained any group (with skipped
        groups, ranks run different numbers of backwards). DeepSpeed reduced and stepped at the last group."""
        self.acc.sync_gradients = True
        if self.deepspeed:
            return
        if self.world == 1:  # nothing to reduce; a step that trained no group still steps every parameter
            for p in self.model.parameters():  # (weight decay, moments), as it does under several processes
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
            return
        ids = torch.tensor([[self.pad_id]], device=self.device)
        with self._autocast():
            out = self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        self.acc.backward(out.logits.float().sum() * 0.0)

    def _sync_and_step(self) -> float:
        self._reduce_gradients()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        grad_norm = self.acc.clip_grad_norm_(params, max_norm)  # DeepSpeed: clipped in its step; gives the norm
        self.optimizer.step()  # DeepSpeed: a no-op (its engine stepped at the boundary); likewise the scheduler
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        with self._whole_weights():
            self.policy.sync_weights()  # a backend with its own copy of the weights (vLLM) samples the next step from these
        return float(grad_norm) if grad_norm is not None else float("nan")

    def train_step(self) -> dict:
        """Rollouts, update and statistics of step `self.step` (0-based); advances self.step."""
        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        idx = self.step_indices(step)
        per_rank = len(idx) // self.world
        mine = idx[self.rank * per_rank:(self.rank + 1) * per_rank]
        chunk = per_rank // cfg.grad_accum
        self.timed = TimedPolicy(self.policy)
        rollout_time = train_time = 0.0
        batches: list[Batch] = []
        for c in range(cfg.grad_accum):
            probs = [self.problems[i] for i in mine[c * chunk:(c + 1) * chunk]]
            t = time.perf_counter()
            self._phase(f"step {step + 1}: rollouts ({len(probs)} problems x {cfg.k})")
            got = self.rollout(probs, step, c)
            rollout_time += time.perf_counter() - t
            t = time.perf_counter()
            self._phase(f"step {step + 1}: log-probs and update")
            with self._local_gradients():
                batches.append(self.optimize(got, step, n_traj_total=per_rank * cfg.k,
                                             last_chunk=c == cfg.grad_accum - 1))
            train_time += time.perf_counter() - t
        t = time.perf_counter()
        grad_norm = self._sync_and_step()
        train_time += time.perf_counter() - t
        self.step += 1

        local = [row for b in batches for row in batch_trajectory_stats(b)]
        gaps = [g for b in batches for g in b.logprob_gaps()]
        timing = {"gen": self.timed.gen_time, "rollout": rollout_time, "train": train_time,
                  "tokens": self.timed.gen_tokens, "entropy": mean(b.entropy for b in batches),
                  "loss": sum(b.loss for b in batches), "gap_sum": sum(gaps), "gap_n": len(gaps),
                  "gap_max": max(gaps, default=0.0)}
        if self.world > 1:
            from accelerate.utils import gather_object

            local = gather_object(local)
            timing_all = gather_object([timing])
        else:
            timing_all = [timing]
        stage = batches[0].method.stage  # SCoRe's 1 or 2; 2 for one-stage methods
        stats = {"step": self.step, "stage": stage, "turns": cfg.turns, "lr": self.scheduler.get_last_lr()[0],
                 "loss": sum(x["loss"] for x in timing_all), "grad_norm": grad_norm}
        stats.update(step_stats(local, timing_all, cfg.turns, time_step=time.perf_counter() - t0, k=cfg.k))
        if cfg.advantage == "per-turn":  # under rloo every turn has its trajectory's advantage: nothing to add
            stats.update(turn_advantage_stats(local, cfg.turns))
        stats["warnings"] = self.watchdog.check(stats)
        self._last_trajectories = local
        return stats

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict | None:
        """Greedy multi-turn evaluation of the live policy on the held-out set (main process): eval/step_N/."""
        if not self.eval_problems:
            return None
        with self._whole_weights():  # every rank (ZeRO-3 gathers); the main process evaluates
            metrics = self._evaluate_main(step) if self.is_main else None
        self.acc.wait_for_everyone()
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
        return checkpoint.save(self)

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
                                + _correction_text(stats) + f" kl={_kl_text(stats['kl'], 3)} {stats['time_step']:.0f}s/step")
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


# ---- entry point for `cocos train` --------------------------------------------------------------
def _correction_text(stats: dict) -> str:
    """The console's correction monitors: wrong turn-1 answers copied, and the batch's i->c / c->i."""
    if "delta_i2c" not in stats:
        return ""
    copy = stats["copy_if_wrong"]
    return (f" copy={'n/a' if copy is None else f'{copy:.0%}'} i2c={stats['delta_i2c']:.3f}"
            f" c2i={stats['delta_c2i']:.3f}")


def _kl_text(kl: float | None, digits: int) -> str:
    return "n/a (no group trained)" if kl is None else f"{kl:.{digits}f}"


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
              + f", kl={_kl_text(s['kl'], 4)}; checkpoint {result['checkpoint']}", flush=True)
    return result
