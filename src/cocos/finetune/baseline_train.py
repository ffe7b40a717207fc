"""What the trained baselines share (Self-Corrector: cocos.baselines.self_corrector.train, ReVISE:
cocos.baselines.revise.train): the config fields for collecting the model's own answers and for fine-tuning, the
collection itself, and the run folder.

    cfg = load_baseline_config(SelfCorrectorConfig, "configs/self_corrector.yaml", ["limit=20"])
    trajectories = own_answers(policy, problems, cfg, seed=cfg.seed)   # turn 1 only, cfg.samples per problem
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cocos.config import CHOICES
from cocos.errors import UserError
from cocos.finetune.config import FinetuneSettings, SFTRunConfig


@dataclass
class BaselineTrainConfig(FinetuneSettings):
    """Collecting the model's own answers, then fine-tuning (FinetuneSettings: epochs, lr, batch_size, ...)."""

    model: str = "smollm2-135m"  # the starting checkpoint (the paper applies the baselines to the boost model)
    # the model's own answers on the training problems
    dataset: str = "mbpp"
    split: str = "train"  # MBPP train: task ids 601-974
    limit: int | None = None  # first N training problems
    samples: int = 4  # answers per problem
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 512
    fewshot: bool = False
    reward: str = "progressive"  # value of an answer: pass ratio (progressive), all pass (binary), tests passed (count)
    extraction: str = "strict"
    timeout: float = 3.0
    backend: str = "auto"  # generation backend (cocos.generation.policy)
    rollout_dtype: str = "auto"  # engine dtype for sampling; training stays in `dtype`
    # fine-tuning (TRL), per fit / stage: FinetuneSettings' fields, with smaller steps than `cocos sft`'s
    epochs: float = 1.0
    lr: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        for name in ("reward", "extraction", "rollout_dtype"):
            choices = CHOICES[name]
            if getattr(self, name) not in choices:
                raise UserError(f"{name}: must be one of {', '.join(choices)} (got {getattr(self, name)!r})")
        for name in ("samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be at least 1 (got {getattr(self, name)}): set it with --set {name}=...")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit: must be a positive number of problems or null (got {self.limit})")
        if self.samples > 1 and self.temperature <= 0:
            raise UserError("samples: above 1 needs temperature above 0 (greedy answers are all the same)")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1] (got {self.top_p})")

    def sft_config(self, **changes):
        """These optimisation settings as the SFT trainer's config (cocos.finetune.sft.make_trainer reads it)."""
        keys = [f.name for f in fields(FinetuneSettings)] + ["model", "max_new_tokens"]
        return SFTRunConfig(**{k: getattr(self, k) for k in keys}, **changes)


def load_baseline_config(cls, path, overrides: list[str] | None = None, *, example: str):
    """YAML file (optional) + `KEY=VALUE` overrides -> a validated `cls` (a UserError names a bad field)."""
    from cocos.config import apply_overrides, build_config, read_config_file

    values = apply_overrides(read_config_file(path, example=example), overrides)
    return build_config(values, cls, what=f"{cls.__name__} setting")


def own_answers(policy, problems, cfg: BaselineTrainConfig, *, seed: int | None, temperature: float | None = None):
    """cfg.samples first-turn answers per problem from `policy`, run against the tests -> trajectories (1 turn)."""
    from cocos.episodes.rollout import run_episodes

    return run_episodes(policy, problems, turns=1, samples_per_problem=cfg.samples,
                        temperature=cfg.temperature if temperature is None else temperature, top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens, fewshot=cfg.fewshot, reward=cfg.reward,
                        extraction=cfg.extraction, timeout=cfg.timeout, seed=seed, progress=cfg.progress)


def start_run(out: str | Path, cfg, config_name: str) -> Path:
    """The run folder, refusing one that already holds a trained model; the config is written into it."""
    import yaml

    out = Path(out)
    if (out / "model.safetensors").exists() or any(out.glob("model-*.safetensors")):
        raise UserError(f"{out} already holds a trained model: pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / config_name).write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    return out


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def drop_long(examples: list[dict], tokenizer, max_length: int, fields: tuple[str, ...]) -> tuple[list[dict], int]:
    """Examples whose prompt + each completion field fit max_length tokens (+1 for EOS); -> (kept, dropped)."""
    def fits(ex):
        return all(len(tokenizer(ex["prompt"] + ex[f])["input_ids"]) + 1 <= max_length for f in fields)

    kept = [ex for ex in examples if fits(ex)]
    return kept, len(examples) - len(kept)


def log_callback(path: Path, **extra):
    """A TrainerCallback writing each log of the trainer to `path` as one JSON line (plus `extra`), flushed."""
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                with open(path, "a") as f:
                    f.write(json.dumps({**extra, "step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return JsonlLog()
