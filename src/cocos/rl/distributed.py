"""The processes of a run and what they do together: accelerate's `prepare`, the step's backwards, one gradient
reduction, clipping and the optimizer step, the whole weights for generation, and the passes' autocast.

Processes: the policy, its optimizer and scheduler go through `accelerator.prepare`, so DDP, DeepSpeed ZeRO and
mixed precision are the user's `accelerate config` (recipes: configs/accelerate/, docs/scale_out.md).
  - DDP: a step's backwards accumulate gradients locally (accelerate's no_sync, `local_gradients`), then one synced
    backward of a zero loss reduces them (`reduce_gradients`): one reduction per step, however many groups each
    rank trained.
  - DeepSpeed: every group trains (one backward each, uniform groups with advantage 0: `lockstep`) and its
    accumulation steps are the groups per rank, so that the engine's boundary is the step's last backward, on every
    rank (`backward`'s `last`).

    dist = Distributed(make_accelerator())          # before the models (cocos.rl.models): rank, world, zero3
    models, optimizer, scheduler = dist.prepare(cfg, models, optimizer, scheduler)
    with dist.local_gradients():                    # the step's passes (cocos.rl.passes) call
        with dist.autocast(): ...                   #   dist.autocast() around their forwards
        dist.backward(loss, last=...)               #   and dist.backward once per batch or group
    grad_norm = dist.step(optimizer, scheduler, cfg.max_grad_norm)
"""

from __future__ import annotations

import contextlib
import os

import torch

from cocos.errors import UserError
from cocos.generation.device import sdpa_without_cudnn


def make_accelerator():
    """The trainer's Accelerator: the precision `accelerate launch` configured, the scheduler stepped once per step."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

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
    wanted = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if AcceleratorState._shared_state.get("_mixed_precision", wanted) != wanted:
        AcceleratorState._reset_state()  # the process group (PartialState) stays
    return Accelerator(cpu=cpu, mixed_precision=wanted, step_scheduler_with_optimizer=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])


class Distributed:
    """One accelerator's processes. `prepare` binds the trained model (and its device, pad id, autocast) that
    the later calls act on; `autocast_dtype` may be changed after it (benchmarks/train_step_time.py does)."""

    def __init__(self, acc):
        from accelerate.utils import DistributedType

        self.acc = acc
        self.rank, self.world, self.is_main = acc.process_index, acc.num_processes, acc.is_main_process
        self.deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        self.zero3 = self.deepspeed and acc.state.deepspeed_plugin.zero_stage == 3
        # DeepSpeed counts a step's backwards (its accumulation steps; ZeRO-2/3 also reduce in every one and ZeRO-3
        # gathers weights in every forward, so ranks must run the same passes): every group trains, one backward each.
        self.lockstep = self.deepspeed
        self.model = self.device = None
        self.pad_id = 0
        self.autocast_dtype = None  # bfloat16: the passes' forwards run under torch.autocast

    # ---- setup ----------------------------------------------------------------------------------
    def prepare(self, cfg, models, optimizer, scheduler):
        """Policy, optimizer and scheduler through accelerate; the reference model for inference only (DeepSpeed:
        sharded like the policy under ZeRO-3, else stage 0, whole). models: cocos.rl.models.Models -> (the Models
        as prepared, optimizer, scheduler). The later calls act on this model, on its device, with its autocast."""
        from accelerate.utils import DistributedType

        acc = self.acc
        if acc.distributed_type == DistributedType.FSDP:
            raise UserError("accelerate config: FSDP is not supported by cocos train yet (generation needs the whole "
                            "weights on every rank); use DeepSpeed ZeRO-3 (configs/accelerate/zero3.yaml) to shard")
        if self.deepspeed:
            self._configure_deepspeed(cfg)
        model, optimizer, scheduler = acc.prepare(models.model, optimizer, scheduler)
        ref_model = models.ref_model
        if ref_model is not None and self.deepspeed:
            from trl.models.utils import prepare_deepspeed  # ZeRO-3: sharded like the policy; else stage 0, whole

            ref_model = prepare_deepspeed(ref_model, acc)
        self.model, self.device, self.pad_id = model, models.device, models.pad_id
        self.autocast_dtype = models.autocast_dtype
        return models.prepared(model, ref_model, acc.unwrap_model(model)), optimizer, scheduler

    def _configure_deepspeed(self, cfg) -> None:
        import deepspeed
        from packaging.version import Version

        plugin = self.acc.state.deepspeed_plugin
        if plugin.zero_stage == 2 and Version(deepspeed.__version__) < Version("0.19"):
            raise UserError(f"deepspeed {deepspeed.__version__}: its ZeRO-2 keeps only the last backward's "
                            "gradient of an accumulation (measured with 0.18.2); pip install 'deepspeed>=0.19'")
        if cfg.logprob_passes != "shared-prefix":
            raise UserError("logprob_passes: DeepSpeed needs shared-prefix (one backward per group); set it back")
        groups = cfg.problems_per_step // self.world
        ds = plugin.deepspeed_config
        if ds.get("gradient_accumulation_steps", "auto") not in ("auto", groups):
            raise UserError(f"DeepSpeed config: gradient_accumulation_steps must be 'auto' or {groups} (the "
                            "groups each process trains per step: problems_per_step / processes)")
        ds["gradient_accumulation_steps"] = groups
        self.acc.gradient_accumulation_steps = groups
        ds["train_micro_batch_size_per_gpu"] = cfg.k  # one backward = one group of k samples
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = cfg.max_grad_norm  # 0: off

    # ---- the step's passes ----------------------------------------------------------------------
    @contextlib.contextmanager
    def autocast(self):
        """The passes' forwards: bf16 autocast when the config asks for it (`autocast`), never cuDNN attention."""
        with sdpa_without_cudnn(self.device):  # cuDNN attention rebuilds a graph per new shape: slow here
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    yield

    @contextlib.contextmanager
    def local_gradients(self):
        """The step's passes: under DDP their backwards accumulate gradients on this rank only (no_sync must hold
        during the forwards too). DeepSpeed is told per backward (`backward`'s `last`)."""
        with contextlib.nullcontext() if self.deepspeed else self.acc.no_sync(self.model):
            yield

    def backward(self, loss: torch.Tensor, *, last: bool = False) -> None:
        """One backward of the step's passes (inside `local_gradients`). `last`: the step's last group; under
        DeepSpeed its backward is the accumulation boundary, where the engine reduces, clips and steps."""
        if self.deepspeed:
            self.acc.sync_gradients = last
            self.acc.backward(loss, scale_wrt_gas=False)  # the loss is already the step's mean, not one micro-batch's
        else:
            self.acc.sync_gradients = False
            self.acc.backward(loss)

    # ---- the optimizer step ---------------------------------------------------------------------
    def reduce_gradients(self) -> None:
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
        with self.autocast():
            out = self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        self.acc.backward(out.logits.float().sum() * 0.0)

    def step(self, optimizer, scheduler, max_grad_norm: float) -> float:
        """Reduce, clip (max_grad_norm; 0: off), step the optimizer and the schedule -> the gradient norm before
        clipping (nan where accelerate gives none)."""
        self.reduce_gradients()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        grad_norm = self.acc.clip_grad_norm_(params, max_norm)  # DeepSpeed: clipped in its step; gives the norm
        optimizer.step()  # DeepSpeed: a no-op (its engine stepped at the boundary); likewise the scheduler
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(grad_norm) if grad_norm is not None else float("nan")

    # ---- whole weights, gathering ---------------------------------------------------------------
    @contextlib.contextmanager
    def whole_weights(self):
        """Generation needs the whole weights: ZeRO-3 gathers them on every rank meanwhile (TRL's way: a full copy
        of the weights per rank for the rollout); a no-op otherwise. Every rank must enter it."""
        if not self.zero3:
            yield
            return
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(self.model, self.acc):
            yield

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order (the list itself with one process)."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def wait(self) -> None:
        self.acc.wait_for_everyone()
