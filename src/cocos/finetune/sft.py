"""Supervised fine-tuning: the boost model (format compliance on KodCode) and Turn-SFT.

    cfg = load_sft_config("configs/boost_sft.yaml", overrides=["epochs=1"])   # cocos.finetune.config
    run_sft(cfg, out_dir)   # out_dir: an HF checkpoint folder (`cocos eval --model out_dir` loads it)

The examples come from `cocos.finetune.sft_data` (which data, and how the "fix" lessons' wrong answers
are made and checked, is described there). Training uses TRL's SFTTrainer on a prompt/completion
dataset, which masks the prompt tokens out of the loss (labels -100) and appends EOS to the completion.
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict
from pathlib import Path

from cocos.errors import UserError
from cocos.finetune.config import SFTRunConfig, trl_training_args
from cocos.finetune.sft_data import build_examples, drop_long, fits_within
from cocos.generation.device import release_free_memory


# ---- training -----------------------------------------------------------------------------------
def _log_callback(path: Path):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Trainer logs -> log.jsonl, one line per logging step, flushed (nothing lost on a crash)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                with open(path, "a") as f:
                    f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return JsonlLog()


def make_trainer(model, tokenizer, examples: list[dict], cfg: SFTRunConfig, out_dir: Path):
    """TRL SFTTrainer on a prompt/completion dataset: loss on the completion tokens only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = Dataset.from_list([{"prompt": ex["prompt"], "completion": ex["completion"]} for ex in examples])
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=2,
        max_length=None,  # over-long examples were dropped beforehand: never cut a completion
        completion_only_loss=True,
        packing=False,
        **trl_training_args(cfg),
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[_log_callback(out_dir / "log.jsonl")])


def _latest_checkpoint(folder: Path) -> str | None:
    ckpts = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return str(ckpts[-1]) if ckpts else None


def run_sft(cfg: SFTRunConfig, out_dir: str | Path) -> Path:
    """Build the examples, fine-tune, save an HF checkpoint (model + tokenizer) into out_dir."""
    import yaml

    from cocos.generation.device import sdpa_without_cudnn
    from cocos.generation.policy import load_policy

    out = Path(out_dir)
    if out.exists() and (out / "model.safetensors").exists() and not cfg.resume:
        raise UserError(f"{out} already holds a trained model: pick another --out, or --set resume=true to continue it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    # Turn-SFT and own wrong answers generate first (the fast engine helps there); training uses policy.model either way.
    own = cfg.data != "turn-sft" and cfg.wrong_answers == "own"
    policy = load_policy(cfg.model, dtype=cfg.dtype, backend="auto" if own or cfg.data == "turn-sft" else "hf",
                         rollout_dtype=cfg.own_rollout_dtype if own else "model")
    model, tokenizer = policy.model, policy.tokenizer

    if cfg.resume and (out / "examples.jsonl").exists() and (out / "sft_stats.json").exists():
        # a resumed fit trains on the examples it started with (building them samples the model: minutes)
        examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines() if line.strip()]
        if cfg.progress:
            print(f"SFT examples: the {len(examples)} of {out / 'examples.jsonl'} (resumed)")
    else:
        examples, stats = build_examples(cfg, policy, fits_within(tokenizer, cfg.max_length))
        examples, n_long = drop_long(examples, tokenizer, cfg.max_length)
        stats["dropped_too_long"] = n_long
        stats["examples"] = len(examples)
        if not examples:
            raise UserError(f"no training example fits max_length={cfg.max_length} tokens: raise max_length")
        with open(out / "examples.jsonl", "w") as f:
            for ex in examples:
                f.write(json.dumps(ex) + "\n")
        (out / "sft_stats.json").write_text(json.dumps(stats, indent=2))
        if cfg.progress:
            print("SFT examples:", json.dumps(stats))
    # the generation backend (the engine's bf16 weights and KV cache) is not needed to train: a boost fit that kept
    # it held ~10 GB and was OOM-killed beside another
    del policy
    gc.collect()
    release_free_memory()

    model.train()
    trainer = make_trainer(model, tokenizer, examples, cfg, out)
    resume = _latest_checkpoint(out / "checkpoints") if cfg.resume else None
    with sdpa_without_cudnn(next(model.parameters()).device):  # padded batches vary in shape: see there
        trainer.train(resume_from_checkpoint=resume)
    model.eval()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    return out
