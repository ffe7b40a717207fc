"""The settings of a TRL fine-tune: `FinetuneSettings` (the optimisation fields every fit shares: `cocos sft`'s and
each fit of the trained baselines, cocos.finetune.baseline_train), `SFTRunConfig` (`cocos sft`: the boost model and
Turn-SFT, its data fields), and the TRL trainer arguments they set alike (`trl_training_args`).

    cfg = load_sft_config("configs/boost_sft.yaml", overrides=["epochs=1"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cocos.config import CHOICES
from cocos.errors import UserError
from cocos.generation.device import bf16_autocast, name_deepspeed_accelerator

KODCODE_HUB_ID = "KodCode/KodCode-V1-SFT-R1"


@dataclass
class FinetuneSettings:
    """The optimisation settings of one TRL fine-tune: `cocos sft`'s, and each fit of the trained baselines
    (cocos.finetune.baseline_train). Subclasses add their data fields and may change a default."""

    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 5e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 1024  # examples longer than this (in tokens) are dropped, never truncated
    weight_decay: float = 0.0
    dtype: str = "float32"
    autocast: str = "auto"  # bf16 autocast of forward and backward (weights stay `dtype`): auto = where bf16 is fast
    gradient_checkpointing: bool = False  # recompute activations (less memory, slower)
    seed: int = 0
    logging_steps: int = 5
    progress: bool = True

    def __post_init__(self):
        for name in ("dtype", "autocast"):
            choices = CHOICES[name]
            if getattr(self, name) not in choices:
                raise UserError(f"{name}: must be one of {', '.join(choices)} (got {getattr(self, name)!r})")
        bf16_autocast(self.autocast, _finetune_device())  # refuses bf16 where it is emulated, before any data is built
        for name in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be at least 1 (got {getattr(self, name)}): set it with --set {name}=...")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("set epochs > 0 or max_steps > 0")


@dataclass
class SFTRunConfig(FinetuneSettings):
    model: str = "smollm2-135m"  # HF id, local folder or packaged alias (cocos.generation.policy.load_policy)
    data: str = "kodcode"  # "kodcode" | "turn-sft" | path to a JSONL (prompt/completion pairs, or KodCode rows)
    kodcode_hub_id: str = KODCODE_HUB_ID
    kodcode_dir: str | None = None  # local KodCode JSON/JSONL files; default $COCOS_DATA_DIR/kodcode_sft_sample
    max_rows: int | None = None  # cap on source rows (KodCode rows / MBPP problems)
    solution_field: str = "solution"  # KodCode field used as the correct answer ("solution" or "r1_solution")
    fix_fraction: float = 0.8  # share of second-turn examples that fix a wrong answer (the rest keep a right one)
    prompt_tests: int = 3  # asserts shown in the prompt ("Your code should pass these tests")
    mbpp_train: bool = False  # also MBPP train's 374 problems (reference: MBPP's code), after the KodCode rows
    # where a second turn's previous answer comes from (cocos.finetune.sft_data): own = the starting model's own sampled
    # answers, failing (fix) or passing (keep) in the sandbox; mutants = one-line mutants of the reference (fix) and
    # the reference itself (keep), the earlier boost data
    wrong_answers: str = "own"
    own_samples: int = 4  # answers sampled per problem (wrong_answers: own)
    own_temperature: float = 0.9
    own_max_new_tokens: int = 256
    own_fewshot: bool = True  # sample with the 3-shot prefix: a base model follows the [DONE] format only with examples
    # the engine's dtype for sampling the model's own answers: auto = bfloat16 where fast (~3.5x float32's speed here;
    # the weights trained stay `dtype`), model = the weights' own
    own_rollout_dtype: str = "auto"
    verify_wrong: bool = True  # run mutants against the row's tests in the sandbox; keep only failing ones
    mutation_tries: int = 8
    test_timeout: float = 5.0
    # Turn-SFT collection (data: turn-sft)
    turn_sft_split: str = "train"  # MBPP split the pairs come from
    turn_sft_samples: int = 1  # turn-1 samples per problem
    turn_sft_temperature: float = 0.0
    turn_sft_keep_correct: bool = False  # also add (correct turn 1 -> same code) examples
    turn_sft_fewshot: bool = False  # few-shot turn 1 when collecting (for a base model)
    max_new_tokens: int = 512
    save_steps: int = 0  # > 0: intermediate checkpoints under out/checkpoints (resume with resume=true)
    resume: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.fix_fraction <= 1.0:
            raise UserError(f"fix_fraction must be in [0, 1], got {self.fix_fraction}: set it with --set fix_fraction=0.5")
        if self.wrong_answers not in CHOICES["wrong_answers"]:
            raise UserError(f"wrong_answers must be 'own' or 'mutants', got {self.wrong_answers!r}: set it with --set wrong_answers=own")
        if self.own_samples < 1 or self.own_temperature <= 0:
            raise UserError(f"own_samples must be >= 1 and own_temperature > 0 (got {self.own_samples}, {self.own_temperature})")
        if self.own_rollout_dtype not in CHOICES["rollout_dtype"]:
            raise UserError(f"own_rollout_dtype must be one of {', '.join(CHOICES['rollout_dtype'])}, "
                            f"got {self.own_rollout_dtype!r}")
        if self.solution_field not in CHOICES["solution_field"]:
            raise UserError(f"solution_field must be 'solution' or 'r1_solution', got {self.solution_field!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or isinstance(self.max_rows, bool) or self.max_rows < 1):
            raise UserError(f"max_rows must be a positive integer or null, got {self.max_rows!r}")


def load_sft_config(path: str | Path | None, overrides: list[str] | None = None) -> SFTRunConfig:
    from cocos.config import apply_overrides, build_config, read_config_file

    values = apply_overrides(read_config_file(path, example="configs/boost_sft.yaml"), overrides)
    return build_config(values, SFTRunConfig, what="SFT setting")


# ---- the TRL trainer's arguments -----------------------------------------------------------------
def _finetune_device() -> str:
    """Where a TRL fit runs (`use_cpu` below): the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trl_training_args(cfg) -> dict:
    """The TRL trainer arguments that SFT and the DPO baselines set alike, from a config's optimisation fields."""
    device = _finetune_device()
    name_deepspeed_accelerator(device)
    cuda = device == "cuda"
    # TRL's `bf16` is mixed precision: an autocast around forward and backward (on CPUs too), the weights and the
    # optimiser stay in `dtype`. With bf16 weights on a GPU it was always on.
    autocast = bf16_autocast(cfg.autocast, device)
    return dict(
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps (transformers 5)
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        report_to=[],
        seed=cfg.seed,
        use_cpu=not cuda,
        bf16=autocast or (cuda and cfg.dtype == "bfloat16"),  # TRL's configs default to bf16: always set here
        activation_checkpointing=cfg.gradient_checkpointing,  # (TRL's default is on)
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
    )
