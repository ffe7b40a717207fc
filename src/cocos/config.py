"""The config loader: YAML files and `--set field=value` overrides -> a validated config dataclass.

    values = apply_overrides(read_config_file("configs/x.yaml"), ["k=4", "lr=2e-5"])
    cfg = build_config(values, TrainConfig)       # or EvalConfig, SFTConfig

Every value is converted to its field's declared type; an unknown field or a value of the wrong type raises
one UserError naming the field, so the CLI prints one line. Used by `cocos train`, `cocos eval --config`,
`cocos sft`, the trained baselines and the demo.

A YAML file may be layered on another: `base: cocos_cpu.yaml` (relative to the file) reads that file first, then this
one's values on top (configs/cocos_gamma0.yaml holds only what it changes).

`CHOICES` is the one table of the fields that take one of a few values: the config dataclasses check their fields
against it, the CLI offers its options' choices from it, and the code that acts on such a value reads it there.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from cocos.errors import UserError

# field -> its values (the first is not necessarily the default: each config sets its own)
CHOICES = {
    # how episodes are played (cocos.episodes.records.RolloutSettings, so EvalConfig and TrainConfig)
    "mode": ("trajectory", "last-turn"),  # last-turn: turns 1..T-1 shared by the k samples of a problem
    "prompt_format": ("paper", "chat"),  # cocos.data.prompts
    # progressive: the paper's r_t = passed / K; binary: all K pass; count: the raw number passed, as the
    # authors' public code rewards it (cocos/rewards.py `calcul_reward`): K times the progressive reward, so
    # on MBPP (K = 3) it weighs 3x against the KL coefficient beta (cocos.episodes.rewards)
    "reward": ("progressive", "binary", "count"),
    "extraction": ("strict", "lenient"),  # what runs when an answer has no [DONE]; see cocos.data.prompts.extract_code
    # generation (cocos.generation.policy.load_policy)
    "backend": ("auto", "hf", "engine", "vllm"),
    "policy_dtype": ("auto", "float32", "bfloat16", "float16"),  # the weights as loaded (`cocos eval --dtype`)
    # the dtype rollouts sample in: "model" (the weights' own), "auto" (bfloat16 where it is fast), or a dtype
    "rollout_dtype": ("model", "auto", "float32", "bfloat16"),
    # training: RL (cocos.rl.config.TrainConfig) and TRL fine-tunes (cocos.finetune.config.FinetuneSettings)
    "dtype": ("float32", "bfloat16", "auto"),  # weights and optimizer: the policy's dtypes less float16 (no loss scaling)
    "autocast": ("auto", "bf16", "none"),
    # RL only (TrainConfig)
    "method": ("cocos", "score"),  # cocos.rl.objective.method_at
    "advantage": ("rloo", "per-turn"),  # the built-in cocos.rl.objective.ADVANTAGES (TrainConfig takes any registered)
    "schedule": ("cosine", "linear", "constant"),
    "kl_estimator": ("k1", "k3"),
    "logprob_passes": ("shared-prefix", "plain"),
    "curriculum_rule": ("variance", "partial"),
    # SFT only (cocos.finetune.config.SFTRunConfig)
    "wrong_answers": ("own", "mutants"),
    "solution_field": ("solution", "r1_solution"),
}


# ---- values -> dataclass ----------------------------------------------------------------------------
def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(name: str, value, tp):
    """Check/convert one value to the field's declared type; UserError naming the field if it does not fit."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise UserError(f"{name}: expected true or false (got {value!r})")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{name}: expected an integer (got {value!r})")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UserError(f"{name}: expected an integer (got {value!r})")
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{name}: expected a number (got {value!r})")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{name}: expected a number (got {value!r})")
    if tp is str:
        if isinstance(value, list):  # train_turns: [1, 2] in YAML
            return ",".join(str(v) for v in value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{name}: expected a string (got {value!r})")
    return value


def _parse_scalar(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict, overrides: list[str] | None) -> dict:
    """`field=value` strings on top of a dict of values (YAML syntax for the value)."""
    values = dict(values)
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: use field=value, e.g. --set lr=2e-5")
        key, text = item.split("=", 1)
        values[key.strip()] = _parse_scalar(text.strip())
    return values


def build_config(values: dict, cls, *, what: str = "config field"):
    """Values -> the config dataclass `cls`, each converted to its field's declared type; an unknown name or
    a value of the wrong type is a UserError naming the field."""
    types_ = _field_types(cls)
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r}; known: {', '.join(types_)}")
    return cls(**{k: _coerce(k, v, types_[k]) for k, v in values.items()})


def read_config_file(path: str | Path | None, example: str = "configs/cocos_cpu.yaml") -> dict:
    """A YAML mapping of field: value (empty without a path); a UserError when missing or malformed.

    A file may start from another: `base: other.yaml` (a path relative to the file) reads that file first (itself
    possibly layered), then this file's values on top. A cycle of bases is a UserError naming the files."""
    if path is None:
        return {}
    return _read_layered(Path(path), (), example)


def _read_layered(p: Path, chain: tuple[tuple[Path, str], ...], example: str) -> dict:
    """One file's values over its base's (`base:` key, relative to the file). `chain`: (resolved path, name as
    shown) of the files that led here, outermost first; a base is shown as its path joined to its naming file's."""
    import yaml

    label = f"--config {p}" if not chain else f"--config {chain[0][1]}: base {p} (named by {chain[-1][1]})"
    if not p.is_file():
        raise UserError(f"{label}: no such file (see {example})")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{label}: not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(values, dict):
        raise UserError(f"{label}: expected a mapping of field: value")
    if "base" not in values:
        return values
    base = values.pop("base")
    if not isinstance(base, str) or not base:
        raise UserError(f"{label}: base: expected the path of another config file, relative to this one (got {base!r})")
    chain = chain + ((p.resolve(), str(p)),)
    target = Path(os.path.normpath(p.parent / base))
    if target.resolve() in [resolved for resolved, _ in chain]:
        files = " -> ".join([name for _, name in chain] + [str(target)])
        raise UserError(f"--config {chain[0][1]}: `base:` makes a cycle: {files}")
    return {**_read_layered(target, chain, example), **values}


def load_config_file(path, cls, overrides: list[str] | None = None, *, example: str, **extra):
    """YAML file (optional) -> `extra` keyword values -> `--set` overrides -> validated `cls`."""
    values = read_config_file(path, example=example)
    values.update({k: v for k, v in extra.items() if v is not None})
    return build_config(apply_overrides(values, overrides), cls)


def dump_config(cfg) -> str:
    """Every field of a resolved config as YAML (what `--print-config` prints and a run folder keeps)."""
    import yaml

    return yaml.safe_dump(asdict(cfg) if is_dataclass(cfg) else dict(cfg), sort_keys=False)
