"""The models of an RL run: the policy (what samples and what trains), its frozen reference, LoRA and gradient
checkpointing. `load_models` builds them once, before accelerate wraps the policy (cocos.rl.distributed); the
`Models` record carries them through the run.

The reference is the starting checkpoint, frozen:
  - full fine-tuning: a deep copy of the starting weights;
  - LoRA: the policy itself with its adapters off (no second copy; `Models.reference` switches them off);
  - ZeRO-3: loaded again from the same weights (from_pretrained already partitioned the policy, so a copy would
    copy empty shards), partitioned the same way.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from typing import Any

import torch

from cocos.errors import UserError
from cocos.generation.device import bf16_autocast, name_deepspeed_accelerator
from cocos.rl.passes import allow_checkpointing_with_prefix


@dataclass(frozen=True)
class Models:
    policy: Any  # cocos.generation.policy.Policy: generates the rollouts (and evaluates)
    tokenizer: Any
    device: Any  # torch.device of the policy
    pad_id: int  # the tokenizer's pad id (its EOS, else 0, where it has none)
    model: Any  # the trained model: after `prepared`, as accelerate wrapped it (DDP, DeepSpeed engine)
    unwrapped: Any  # the trained model itself, without accelerate's wrapper
    ref_model: Any  # the frozen reference; None with LoRA (the policy with its adapters off)
    autocast_dtype: Any  # torch.bfloat16 where the passes' forwards run under autocast (cfg.autocast here), else None

    @contextlib.contextmanager
    def reference(self):
        """The frozen reference model (with LoRA: the policy with its adapters off)."""
        if self.ref_model is None:
            with self.unwrapped.disable_adapter():
                yield self.model
        else:
            yield self.ref_model

    def prepared(self, model, ref_model, unwrapped) -> Models:
        """The record once accelerate has wrapped the policy (and, under DeepSpeed, the reference)."""
        return replace(self, model=model, ref_model=ref_model, unwrapped=unwrapped)


def load_models(cfg, policy=None, *, zero3: bool = False, verbose: bool = True) -> Models:
    """The policy (`policy`, else cfg.model loaded), LoRA adapters (cfg.lora), the reference and gradient
    checkpointing (cfg.gradient_checkpointing) of TrainConfig `cfg`; the model in train mode."""
    if policy is None:
        from cocos.generation.policy import load_policy

        # The engine reads plain weights once: LoRA adapters and ZeRO-3 shards need HF generate.
        backend = "hf" if (cfg.lora or zero3) and cfg.backend in ("auto", "engine") else cfg.backend
        policy = load_policy(cfg.model, dtype=cfg.dtype, backend=backend, rollout_dtype=cfg.rollout_dtype,
                             verbose=verbose)
    tokenizer, device = policy.tokenizer, policy.device
    name_deepspeed_accelerator(device)
    model = policy.model
    if cfg.lora:
        model = with_lora(model, cfg)
        # The engine reads plain nn.Linear weights and would ignore the adapters: generate through HF.
        from cocos.generation.policy import Policy

        policy = Policy(model, policy.tokenizer, name=getattr(policy, "name", ""), source=getattr(policy, "source", ""),
                        path=getattr(policy, "path", ""), backend="hf")
        ref_model = None  # reference = the same model with adapters disabled
    elif hasattr(next(model.parameters()), "ds_id"):
        # ZeRO-3: from_pretrained already partitioned the policy (transformers' zero.Init), so a copy would copy
        # empty shards; the reference loads again from the same weights, partitioned the same way.
        from cocos.generation.policy import load_policy

        ref_model = load_policy(cfg.model, dtype=cfg.dtype, backend="hf", verbose=False).model
        ref_model.eval().requires_grad_(False)
    else:
        # Full fine-tuning: a frozen copy of the starting weights is the reference.
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    if cfg.gradient_checkpointing:  # after the reference's copy: the frozen reference keeps nothing to recompute
        enable_gradient_checkpointing(model.get_base_model() if cfg.lora else model, cfg.logprob_passes)
    model.train()
    pad = tokenizer.pad_token_id
    pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
    autocast_dtype = torch.bfloat16 if bf16_autocast(cfg.autocast, device) else None
    return Models(policy=policy, tokenizer=tokenizer, device=device, pad_id=pad_id, model=model, unwrapped=model,
                  ref_model=ref_model, autocast_dtype=autocast_dtype)


def with_lora(model, cfg):
    """`model` with LoRA adapters of cfg.lora_r, lora_alpha, lora_dropout on cfg.lora_target_modules (a peft model)."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=targets, task_type="CAUSAL_LM"))


def enable_gradient_checkpointing(base, logprob_passes: str) -> None:
    """Recompute `base`'s layers in the backward (non-reentrant); shared-prefix passes need layers that may keep
    the prefix's read-only cache under checkpointing (cocos.rl.passes)."""
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x: non-reentrant by default
        base.activation_checkpointing_enable()
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if logprob_passes == "shared-prefix" and not allow_checkpointing_with_prefix(base):
        raise UserError("gradient_checkpointing: with logprob_passes=shared-prefix it needs a transformers "
                        "whose layers can keep a read-only cache under checkpointing (5.x); set "
                        "logprob_passes=plain, or upgrade transformers")
