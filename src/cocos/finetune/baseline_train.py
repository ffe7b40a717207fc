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
from cocos.episodes.records import RolloutSettings
from cocos.errors import UserError
from cocos.finetune.config import FinetuneSettings, SFTRunConfig


# RolloutSettings' fields a baseline's own answers hold fixed: first answers, in the paper's prompt format (the
# baselines' actors and pair builders write that format only); a config may name them only with these values
OWN_ANSWERS_FIXED = {"turns": 1, "mode": "trajectory", "prompt_format": "paper"}


@dataclass
class BaselineTrainConfig(FinetuneSettings, RolloutSettings):
    """Collecting the model's own answers, then fine-tuning. The sampling and scoring fields (temperature, top_p,
    max_new_tokens, fewshot, reward, extraction, timeout) are cocos.episodes.records.RolloutSettings', checked there;
    the optimisation fields (epochs, lr, batch_size, ...) FinetuneSettings'. The own answers are first turns in the
    paper format: turns, mode and prompt_format stay as OWN_ANSWERS_FIXED says."""

    model: str = "smollm2-135m"  # the starting checkpoint (the paper applies the baselines to the boost model)
    # the model's own answers on the training problems
    dataset: str = "mbpp"
    split: str = "train"  # MBPP train: task ids 601-974
    limit: int | None = None  # first N training problems
    samples: int = 4  # answers per problem
    backend: str = "auto"  # generation backend (cocos.generation.policy)
    rollout_dtype: str = "auto"  # engine dtype for sampling; training stays in `dtype`
    # RolloutSettings' defaults changed for sampling own answers (the rest keep theirs: top_p 1.0, 512 new tokens,
    # zero-shot, progressive reward, strict extraction, 3 s per test)
    turns: int = 1
    temperature: float = 0.9
    # fine-tuning (TRL), per fit / stage: FinetuneSettings' fields, with smaller steps than `cocos sft`'s
    epochs: float = 1.0
    lr: float = 1e-5

    def __post_init__(self):
        super().__post_init__()  # FinetuneSettings' checks
        self.check_rollout()
        for name, value in OWN_ANSWERS_FIXED.items():
            if getattr(self, name) != value:
                raise UserError(f"{name}: a baseline trains on its own first answers in the paper's prompt format, "
                                f"so {name} stays {value!r} here (got {getattr(self, name)!r})")
        if self.rollout_dtype not in CHOICES["rollout_dtype"]:
            raise UserError(f"rollout_dtype: must be one of {', '.join(CHOICES['rollout_dtype'])} "
                            f"(got {self.rollout_dtype!r})")
        if self.samples < 1:
            raise UserError(f"samples: must be at least 1 (got {self.samples}): set it with --set samples=...")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit: must be a positive number of problems or null (got {self.limit})")
        if self.samples > 1 and self.temperature <= 0:
            raise UserError("samples: above 1 needs temperature above 0 (greedy answers are all the same)")

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

    changes = {} if temperature is None else {"temperature": temperature}
    return run_episodes(policy, problems, cfg.rollout_settings(turns=1, **changes), samples_per_problem=cfg.samples,
                        seed=seed, progress=cfg.progress)


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
