"""TrainConfig: every option of `cocos train` (TRL style: one dataclass, YAML files, `--set` overrides).

    cfg = load_config("configs/cocos_cpu.yaml", overrides=["k=4", "lr=2e-5"])

Unknown fields and values of the wrong type or outside their choices raise one UserError naming the
field, so the CLI prints one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

from cocos.config import CHOICES, dump_config, load_config_file
from cocos.episodes.records import RolloutSettings
from cocos.errors import UserError

# the fields checked against cocos.config.CHOICES (besides the rollout fields, which RolloutSettings checks)
TRAIN_CHOICES = ("method", "advantage", "schedule", "dtype", "autocast", "backend", "rollout_dtype", "kl_estimator",
                 "logprob_passes", "curriculum_rule")


def train_choices(name: str, value=None) -> tuple:
    """The values field `name` may take: its CHOICES row; for `advantage`, every name registered in
    cocos.rl.objective.ADVANTAGES (CHOICES lists the built-in ones), so that a function registered there is
    accepted. The registry is read only for a value outside CHOICES (it imports torch)."""
    if name == "advantage" and value not in CHOICES[name]:
        from cocos.rl.objective import ADVANTAGES

        return tuple(ADVANTAGES)
    return CHOICES[name]


@dataclass
class TrainConfig(RolloutSettings):
    """The rollout fields (turns, mode, temperature, top_p, max_new_tokens, prompt_format, fewshot, reward, timeout,
    extraction) are cocos.episodes.records.RolloutSettings'; this adds the model, the objective and the optimisation."""

    # ---- model ----
    model: str = "smollm2-135m"  # packaged alias, HF id or local checkpoint (cocos.generation.policy.load_policy)
    dtype: str = "float32"  # weights (and optimizer) dtype; keep float32 for full fine-tuning
    autocast: str = "auto"  # bf16 autocast for the log-prob passes: auto = where the hardware has it
    backend: str = "auto"  # generation backend (cocos.generation.policy)
    rollout_dtype: str = "auto"  # engine dtype for sampling: auto = bf16 where fast (weights stay `dtype`); model = same as weights
    lora: bool = False  # LoRA adapters via peft; the reference is then the base with adapters off
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"  # peft target_modules; comma list or "all-linear"

    # ---- objective (DESIGN.md) ----
    method: str = "cocos"  # cocos | score (two-stage SCoRe baseline)
    gamma: float = 0.5  # accumulated reward discount
    beta: float = 0.01  # KL coefficient (score = R - beta * KL)
    skip_uniform_groups: bool = False  # skip groups whose k rewards are all equal (no reward signal; see trainer)
    # curriculum: > 0 = before step 1, sample this many turn-1 answers per training problem with the starting
    # model and train only on the problems whose answers earned different rewards (kept ids: OUT/curriculum.json)
    curriculum_k: int = 0
    # which problems the curriculum keeps (cocos.rl.curriculum): variance = the k turn-1 rewards differ; partial =
    # some sample failed a test and some passed one (something for turn 2 to fix)
    curriculum_rule: str = "variance"
    # a curriculum.json written by another run: train on its kept ids instead of sampling (needs curriculum_k > 0);
    # one curriculum shared by several runs (seeds, methods) costs one sampling pass and gives them the same problems
    curriculum_from: str = ""
    # our extension: R - copy_penalty * 1[r_1 < 1] * edit_sim(turn 1, turn T), against copying a wrong first answer
    # (cocos.rl.objective.with_copy_penalty); 0 = off, the paper's objective
    copy_penalty: float = 0.0
    kl_estimator: str = "k1"  # per-token KL estimate: k1 = logp - logp_ref, k3 = exp(-d) - 1 + d
    k: int = 2  # samples (trajectories) per problem, RLOO group size
    # the advantage of each trained turn (cocos.rl.objective.ADVANTAGES, docs/credit.md): rloo = the trajectory's
    # score minus the mean of the other k-1 (DESIGN.md), on every turn; per-turn = the same with turn t's
    # return-to-go (its and later turns' reward terms and KL) in place of the score; or any name registered there
    advantage: str = "rloo"
    train_turns: str = "all"  # which turns carry gradient: all | last | comma list of 1-based turns ("2" or "1,2")

    # ---- SCoRe (method: score) ----
    score_stage1_steps: int = 10  # steps of stage I; stage II after
    score_beta1: float = 0.1  # stage I: strong KL on turns 1..T-1
    score_alpha: float = 10.0  # stage II: shaped bonus alpha * (r_T - r_1)

    # ---- rollouts (RolloutSettings' fields; sampling for RL) ----
    temperature: float = 0.9

    # ---- data ----
    dataset: str = "mbpp"
    split: str = "train"  # MBPP train = task ids 601-974
    train_limit: int | None = None  # use only the first N training problems

    # ---- optimisation ----
    lr: float = 1e-5
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0  # 0 = no clipping
    problems_per_step: int = 128  # global batch of problems per optimizer step (split across ranks)
    grad_accum: int = 1  # each rank rolls out and back-propagates its problems in this many chunks
    micro_batch: int = 8  # sequences per log-prob forward pass (bounds memory; logprob_passes=plain)
    # how the log-prob passes run (cocos.rl.passes): shared-prefix = per group of k samples, their common prompt
    # prefix once and two passes (policy with gradient, reference); plain = padded micro-batches, three passes.
    # Same loss and gradients; shared-prefix holds one group's k x (trained turns) sequences in memory at once.
    logprob_passes: str = "shared-prefix"
    # recompute each layer's activations during the backward instead of keeping them: activation memory of about one
    # layer instead of all of them, for one more forward of the policy (either logprob_passes)
    gradient_checkpointing: bool = False
    max_steps: int = 100
    max_minutes: float = 0.0  # 0 = no limit; else stop after the first step that ends past it (then save + eval)
    seed: int = 0

    # ---- evaluation, checkpoints, logging ----
    eval_every: int = 0  # 0 = only at the end (if eval_limit > 0)
    eval_at_start: bool = False
    eval_dataset: str = "mbpp"
    eval_split: str = "validation"  # MBPP validation = task ids 511-600
    eval_limit: int | None = 20  # 0 = no evaluation
    eval_turns: int | None = None  # None = turns
    eval_max_new_tokens: int | None = None  # None = max_new_tokens
    save_every: int = 0  # 0 = only at the end
    save_total_limit: int = 2  # keep the last N checkpoints
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "cocos"

    # ---- failure-signature watchdog ----
    watch_window: int = 5  # steps compared
    watch_kl_max: float = 20.0  # mean sequence KL (nats) above which KL is "exploding"
    watch_edit_sim: float = 0.98  # edit similarity (1, T) above which turns no longer differ
    watch_copy: float = 0.9  # share of wrong turn-1 answers copied at turn T above which "no revision behaviour" is named
    watch_hardcoded: float = 0.2  # share of turn-T answers echoing a shown test's expected value: "reward hacking"

    # ------------------------------------------------------------------------------------------
    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        self.check_rollout()
        for name in TRAIN_CHOICES:
            choices = train_choices(name, getattr(self, name))
            if getattr(self, name) not in choices:
                raise UserError(f"{name}: must be one of {', '.join(choices)} (got {getattr(self, name)!r})")
        positive = ("k", "problems_per_step", "grad_accum", "micro_batch", "lora_r")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.k < 2:
            raise UserError("k: RLOO needs at least 2 samples per problem (leave-one-out baseline); set k=2 or more")
        for name in ("max_steps", "warmup_steps", "eval_every", "save_every", "save_total_limit", "score_stage1_steps",
                     "curriculum_k"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}: must be >= 0 (got {getattr(self, name)})")
        for name in ("beta", "lr", "score_beta1", "max_minutes"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}: must be >= 0 (got {getattr(self, name)})")
        if self.temperature == 0:
            raise UserError("temperature: RL needs sampling; use a temperature > 0 (the paper uses 0.9)")
        if self.curriculum_from and not self.curriculum_k:
            raise UserError("curriculum_from: applies only with a curriculum; set curriculum_k too (e.g. curriculum_k=4)")
        self.trained_turns()  # validates train_turns
        if self.copy_penalty < 0:
            raise UserError(f"copy_penalty: must be >= 0 (got {self.copy_penalty})")
        if self.copy_penalty and (self.method != "cocos" or self.turns < 2):
            raise UserError("copy_penalty: applies to method=cocos with turns >= 2 (its R is where r_T enters with "
                            "weight 1); set copy_penalty=0")
        if self.method == "score" and self.turns < 2:
            raise UserError("turns: SCoRe needs at least 2 turns")

    def trained_turns(self) -> list[int]:
        """0-based indices of the turns that carry gradient."""
        T, spec = self.turns, str(self.train_turns).strip().lower()
        if spec == "all":
            out = list(range(T))
        elif spec == "last":
            out = [T - 1]
        else:
            try:
                out = sorted({int(x) - 1 for x in spec.replace(" ", "").split(",") if x})
            except ValueError:
                raise UserError(f"train_turns: use all, last or a comma list of turns like 1,2 (got {self.train_turns!r})")
            if not out or out[0] < 0 or out[-1] >= T:
                raise UserError(f"train_turns: turns must be between 1 and turns={T} (got {self.train_turns!r})")
        if self.mode == "last-turn" and out != [T - 1]:
            if spec == "all":  # last-turn mode trains only the last turn: the shared turns have no advantage
                return [T - 1]
            raise UserError(f"train_turns: last-turn mode trains only turn {T}; set train_turns=last (got {self.train_turns!r})")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


# ---- loading ------------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **extra) -> TrainConfig:
    """YAML file (optional) -> `extra` keyword values -> `--set` overrides -> validated TrainConfig."""
    return load_config_file(path, TrainConfig, overrides, example="configs/cocos_cpu.yaml", **extra)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(dump_config(cfg))


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)
