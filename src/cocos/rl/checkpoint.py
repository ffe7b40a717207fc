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


def save(out: Path, step: int, *, cfg, dist, models, optimizer, scheduler, data_order: dict,
         watchdog_history: list) -> Path:
    """Checkpoint of a run (folder `out`) at `step`; old ones beyond cfg.save_total_limit are removed. Every rank
    calls it (each saves its RNG state).

    dist: the run's processes (cocos.rl.distributed.Distributed); models: its Models (cocos.rl.models);
    data_order: what the trainer says of its problems' order (seed, n_problems, problems_per_step, next_indices,
    task_ids); watchdog_history: the watchdog's past step statistics (the last 4 windows are kept)."""
    acc = dist.acc
    final = runs.checkpoint_dir(out, step)
    tmp = final.parent / f".tmp-step_{step}"
    weights = None if cfg.lora else acc.get_state_dict(models.model)  # every rank: ZeRO-3 gathers
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_model(models.unwrapped, tmp, weights, lora=cfg.lora)
        models.tokenizer.save_pretrained(str(tmp))
        in_engine = dist.deepspeed
        torch.save({"step": step, "optimizer": None if in_engine else optimizer.state_dict(),
                    "scheduler": None if in_engine else scheduler.state_dict(), "data_order": data_order,
                    "watchdog": watchdog_history[-4 * cfg.watch_window:],
                    "config": cfg.to_dict(), "world_size": dist.world}, tmp / STATE_FILE)
    acc.wait_for_everyone()
    if dist.deepspeed:
        acc.save_state(str(tmp / ACCELERATE_STATE))  # every rank writes its shards
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    with contextlib.suppress(ImportError):
        import numpy as np

        rng["numpy"] = np.random.get_state()
    torch.save(rng, tmp / f"rng_rank{dist.rank}.pt")
    acc.wait_for_everyone()
    if dist.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # atomic: a reader sees no checkpoint or a whole one
        for old in checkpoint_steps(out)[:-cfg.save_total_limit or None]:
            shutil.rmtree(runs.checkpoint_dir(out, old), ignore_errors=True)
    acc.wait_for_everyone()
    return final


ACCELERATE_STATE = "accelerate_state"


def _save_model(model, path: Path, weights, *, lora: bool) -> None:
    if lora:
        model.save_pretrained(str(path / "adapter"))
        merged = copy.deepcopy(model).merge_and_unload()  # plain weights for `cocos eval --model`
        merged.save_pretrained(str(path))
    else:
        model.save_pretrained(str(path), state_dict=weights)


def load(path: Path, *, lora: bool, n_problems: int, dist, models, optimizer, scheduler) -> tuple[int, list]:
    """Restore the model, optimizer, scheduler and this rank's RNG from checkpoint `path` -> (its step, the
    watchdog's history). n_problems: how many training problems this run has (a checkpoint of another count is
    refused)."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if state["data_order"]["n_problems"] != n_problems:
        raise UserError(f"--resume: the checkpoint was trained on {state['data_order']['n_problems']} problems, "
                        f"this config gives {n_problems}; resume with the run's own config.yaml")
    if lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(models.unwrapped, load_file(str(path / "adapter" / "adapter_model.safetensors")))
    elif dist.deepspeed:
        dist.acc.load_state(str(path / ACCELERATE_STATE))  # weights, optimizer and scheduler of the engine
    else:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(str(path), dtype=next(models.model.parameters()).dtype)
        models.unwrapped.load_state_dict(saved.state_dict())
        del saved
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng_rank{dist.rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "numpy" in rng:
            import numpy as np

            np.random.set_state(rng["numpy"])
    if hasattr(models.policy, "sync_weights"):
        with dist.whole_weights():
            models.policy.sync_weights()
    return state["step"], list(state.get("watchdog", []))
