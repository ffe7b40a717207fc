"""Training ReVISE (Lee et al. 2025; the method, its data and its actor: `actor` beside this module): two stages of
preference optimisation (TRL's DPOTrainer) on the model's own answers, first verify, then correct.

    cfg = load_revise_config("configs/revise.yaml", ["limit=20"])
    run_revise(cfg, "runs/revise")      # cocos revise --config ... --out runs/revise

Steps:
0. the REFINE token is added to the tokenizer and the embeddings grow by one row (saved with the checkpoint);
1. stage 1, verify: the model samples `samples` answers per training problem, each run against its tests;
   one DPO pair per distinct answer (`verify_pairs`); DPO against the model as it was before the stage;
2. stage 2, correct: the stage-1 model samples again; the correction pairs (`correct_pairs`), plus, with
   `stage2_verify`, the verification pairs of these new answers (so the verdict learnt in stage 1 is kept);
   DPO against the stage-1 model.
`sft_weight` > 0 adds TRL's "sft" loss (negative log-likelihood of the chosen text) with that weight.

The run folder OUT is the final checkpoint (model + tokenizer with REFINE: `cocos eval --model OUT --actor revise`),
with stage1_pairs.jsonl, stage2_pairs.jsonl, stats.json (answers, right answers and pairs per stage),
revise_config.yaml, log.jsonl (the DPO trainer's logs, each line with its "stage"), and with `save_stage1` the
stage-1 checkpoint in OUT/stage1/.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from cocos.baselines.revise.actor import add_refine_token, attempts_from_trajectories, correct_pairs, verify_pairs
from cocos.errors import UserError
from cocos.finetune.baseline_train import (BaselineTrainConfig, drop_long, load_baseline_config, log_callback,
                                           own_answers, start_run, write_jsonl)
from cocos.finetune.config import trl_training_args


@dataclass
class ReviseConfig(BaselineTrainConfig):
    lr: float = 1e-6  # TRL's DPO default
    beta: float = 0.1  # DPO's beta: strength of the pull towards the reference model
    sft_weight: float = 0.0  # weight of an NLL term on the chosen texts (0: DPO alone)
    reference_fallback: bool = True  # stage 2: a wrong answer without a right sample of its problem -> the reference
    stage2_verify: bool = True  # stage 2 also trains the verdict on its own answers
    save_stage1: bool = False  # keep the stage-1 checkpoint in OUT/stage1

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise UserError(f"beta: must be above 0 (got {self.beta})")
        if self.sft_weight < 0:
            raise UserError(f"sft_weight: must be >= 0 (got {self.sft_weight})")


def load_revise_config(path, overrides: list[str] | None = None) -> ReviseConfig:
    return load_baseline_config(ReviseConfig, path, overrides, example="configs/revise.yaml")


def make_dpo_trainer(model, tokenizer, pairs: list[dict], cfg: ReviseConfig, out: Path, stage: str):
    """TRL's DPOTrainer on prompt/chosen/rejected texts; the reference is a frozen copy of `model` as it is now."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    losses = ["sigmoid"] + (["sft"] if cfg.sft_weight > 0 else [])
    args = DPOConfig(
        output_dir=str(out / "checkpoints" / stage),
        beta=cfg.beta,
        loss_type=losses,
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight > 0 else None,
        max_length=None,  # over-long pairs were dropped beforehand
        save_strategy="no",
        **trl_training_args(cfg),
    )
    data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    # An explicit copy: without one TRL reloads the reference from the model's original path, which has neither the
    # REFINE row of the embeddings nor, in stage 2, what stage 1 learnt.
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    return DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer,
                      callbacks=[log_callback(out / "log.jsonl", stage=stage)])


def train_stage(policy, pairs: list[dict], cfg: ReviseConfig, out: Path, stage: str) -> dict:
    """One DPO stage on `pairs` (over-long ones dropped). -> counts."""
    from cocos.generation.device import sdpa_without_cudnn

    pairs, n_long = drop_long(pairs, policy.tokenizer, cfg.max_length, ("chosen", "rejected"))
    write_jsonl(out / f"{stage}_pairs.jsonl", pairs)
    if not pairs:
        raise UserError(f"revise {stage}: no preference pair fits max_length={cfg.max_length} tokens: raise max_length")
    model = policy.model
    model.train()
    trainer = make_dpo_trainer(model, policy.tokenizer, pairs, cfg, out, stage)
    with sdpa_without_cudnn(next(model.parameters()).device):
        trainer.train()
    model.eval()
    kinds: dict = {}
    for p in pairs:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    return {"pairs": len(pairs), "dropped_too_long": n_long, **kinds}


def run_revise(cfg: ReviseConfig, out_dir: str | Path) -> Path:
    from cocos.data.problems import load_problems
    from cocos.generation.policy import Policy, load_policy

    out = start_run(out_dir, cfg, "revise_config.yaml")
    problems = load_problems(cfg.dataset, cfg.split, cfg.limit)
    loaded = load_policy(cfg.model, dtype=cfg.dtype, backend="hf")
    add_refine_token(loaded.model, loaded.tokenizer)  # before the rollout engine reads the vocabulary size
    policy = Policy(loaded.model, loaded.tokenizer, name=loaded.name, source=loaded.source, path=loaded.path,
                    backend=cfg.backend, rollout_dtype=cfg.rollout_dtype)
    stats = {}
    for stage in ("stage1", "stage2"):
        attempts = attempts_from_trajectories(own_answers(policy, problems, cfg, seed=cfg.seed + (stage == "stage2")),
                                              problems)
        row = {"answers": len(attempts), "right": sum(a.correct for a in attempts)}
        if stage == "stage1":
            pairs = verify_pairs(attempts)
        else:
            pairs, counts = correct_pairs(attempts, cfg.reference_fallback)
            row["wrong_without_target"] = counts["no_target"]
            if cfg.stage2_verify:
                pairs += verify_pairs(attempts)
            if not pairs:
                raise UserError("revise stage2: no correction pair (no wrong answer with a right target): set "
                                "reference_fallback=true or stage2_verify=true, or raise samples or limit")
        row |= train_stage(policy, pairs, cfg, out, stage)
        stats[stage] = row
        if cfg.progress:
            print(f"revise {stage}:", json.dumps(row))
        if stage == "stage1" and cfg.save_stage1:
            policy.model.save_pretrained(str(out / "stage1"))
            policy.tokenizer.save_pretrained(str(out / "stage1"))
    policy.model.save_pretrained(str(out))
    policy.tokenizer.save_pretrained(str(out))
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return out
