"""Checkpoints of a training run: checkpoints/step_N/ holds the model (HF format; merged weights with LoRA, the
adapter in adapter/), the tokenizer, trainer_state.pt (optimizer, scheduler, step, data order, watchdog history)
and rng_rank*.pt. Written under a temporary name, then renamed: a reader sees no checkpoint or a whole one.
Under DeepSpeed the optimizer and scheduler live in the engine (sharded under ZeRO): accelerate's save_state writes
them to accelerate_state/ and load_state reads them back; trainer_state.pt then holds no optimizer."""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
from pathlib import Path

import torch

from cocos.errors import UserError
from cocos.eval import runs
from cocos.eval.runs import STATE_FILE, checkpoint_steps


def save(trainer) -> Path:
    """Checkpoint of `trainer` (a cocos.rl.trainer.Trainer) at its current step; old ones beyond
    save_total_limit are removed. Every rank calls it (each saves its RNG state)."""
    final = runs.checkpoint_dir(trainer.out, trainer.step)
    tmp = final.parent / f".tmp-step_{trainer.step}"
    weights = None if trainer.cfg.lora else trainer.acc.get_state_dict(trainer.model)  # every rank: ZeRO-3 gathers
    if trainer.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_model(trainer, tmp, weights)
        trainer.tokenizer.save_pretrained(str(tmp))
        in_engine = trainer.deepspeed
        torch.save({"step": trainer.step, "optimizer": None if in_engine else trainer.optimizer.state_dict(),
                    "scheduler": None if in_engine else trainer.scheduler.state_dict(),
                    "data_order": {"seed": trainer.cfg.seed, "n_problems": len(trainer.problems),
                                   "problems_per_step": trainer.cfg.problems_per_step,
                                   "next_indices": trainer.step_indices(trainer.step),
                                   "task_ids": [p.task_id for p in trainer.problems]},
                    "watchdog": trainer.watchdog.history[-4 * trainer.cfg.watch_window:],
                    "config": trainer.cfg.to_dict(), "world_size": trainer.world}, tmp / STATE_FILE)
    trainer.acc.wait_for_everyone()
    if trainer.deepspeed:
        trainer.acc.save_state(str(tmp / ACCELERATE_STATE))  # every rank writes its shards
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    with contextlib.suppress(ImportError):
        import numpy as np

        rng["numpy"] = np.random.get_state()
    torch.save(rng, tmp / f"rng_rank{trainer.rank}.pt")
    trainer.acc.wait_for_everyone()
    if trainer.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # atomic: a reader sees no checkpoint or a whole one
        for old in checkpoint_steps(trainer.out)[:-trainer.cfg.save_total_limit or None]:
            shutil.rmtree(runs.checkpoint_dir(trainer.out, old), ignore_errors=True)
    trainer.acc.wait_for_everyone()
    return final


ACCELERATE_STATE = "accelerate_state"


def _save_model(trainer, path: Path, weights) -> None:
    model = trainer.unwrapped
    if trainer.cfg.lora:
        model.save_pretrained(str(path / "adapter"))
        merged = copy.deepcopy(model).merge_and_unload()  # plain weights for `cocos eval --model`
        merged.save_pretrained(str(path))
    else:
        model.save_pretrained(str(path), state_dict=weights)


def load(trainer, path: Path) -> None:
    """Restore model, optimizer, scheduler, step, watchdog history and this rank's RNG from checkpoint `path`."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if state["data_order"]["n_problems"] != len(trainer.problems):
        raise UserError(f"--resume: the checkpoint was trained on {state['data_order']['n_problems']} problems, "
                        f"this config gives {len(trainer.problems)}; resume with the run's own config.yaml")
    if trainer.cfg.lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(trainer.unwrapped, load_file(str(path / "adapter" / "adapter_model.safetensors")))
    elif trainer.deepspeed:
        trainer.acc.load_state(str(path / ACCELERATE_STATE))  # weights, optimizer and scheduler of the engine
    else:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(str(path), dtype=next(trainer.model.parameters()).dtype)
        trainer.unwrapped.load_state_dict(saved.state_dict())
        del saved
    if state["optimizer"] is not None:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.step = state["step"]
    trainer.watchdog.history = list(state.get("watchdog", []))
    rng_file = path / f"rng_rank{trainer.rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "numpy" in rng:
            import numpy as np

            np.random.set_state(rng["numpy"])
    if hasattr(trainer.policy, "sync_weights"):
        with trainer._whole_weights():
            trainer.policy.sync_weights()
