"""Loading a model, and generating text with it through one backend.

Contract shared by rollout, eval and the trainer:

    policy = load_policy("smollm2-135m" | HF id | local path, dtype="float32"|"bfloat16"|"auto", device=None,
                         backend="auto"|"hf"|"engine"|"vllm", rollout_dtype="model"|"auto"|"bfloat16"|"float32")
    policy.model      # the live torch module (the trainer optimises exactly this object)
    policy.tokenizer  # HF tokenizer
    policy.generate(prompts: list[str], sampling: Sampling, n: int = 1) -> list[Generation]
        # Sampling(max_new_tokens=512, temperature=0.0, top_p=1.0, seed=None, stop=("[DONE]",))
        # len(prompts) * n Generations: the n samples of a prompt together, in input order

Prompts are final strings (any chat template is already applied by `cocos.data.prompts`). temperature 0 is
greedy. Generation stops at the first stop string or EOS; the stop string is kept in `text`
(`cocos.generation.sampling` has the `Sampling` record, checked when it is made, and the rules every backend
follows). Each backend samples the n of a prompt itself (the engine prefills the prompt once for them).

- Named models (`cocos.generation.models`) are fetched and converted on first use.
- `generate` extras: `batch_size=16` (HF: prompts are sorted by length into batches, results come back
  in input order) and `progress=False`.
- A convenience for scripts and the command line, not used inside the package: without a record, the sampling
  fields as keywords make one, `policy.generate(prompts, max_new_tokens=64)` (= `Sampling(max_new_tokens=64)`).
- Backends (`cocos.generation.backends`): "auto" is the CPU rollout engine where it can serve the model, else HF
  generate.
- `python -m cocos.generation.policy generate PROMPT` tries a model from the command line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cocos.config import CHOICES
from cocos.errors import UserError
from cocos.generation.backends import Backend
from cocos.generation.backends.hf import HFBackend
from cocos.generation.device import fast_bf16
from cocos.generation.models import DEFAULT_MODEL, NAMED_MODELS, resolve_named
from cocos.generation.sampling import Generation, Sampling, encode_prompt


def _log(msg: str) -> None:
    print(f"cocos: {msg}", file=sys.stderr, flush=True)


def _check_rollout_dtype(rollout_dtype: str) -> None:
    if rollout_dtype not in CHOICES["rollout_dtype"]:
        raise UserError(f"rollout_dtype {rollout_dtype!r} is not one of {', '.join(CHOICES['rollout_dtype'])}")


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype not in CHOICES["policy_dtype"]:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(CHOICES['policy_dtype'])}")
    if dtype == "auto":
        # bf16 matmuls are fast on GPUs; on CPUs their speed varies a lot, float32 is the safe default.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_policy(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str | None = None,
    backend: str = "auto",
    rollout_dtype: str = "model",
    cache_dir: str | os.PathLike | None = None,
    verbose: bool = True,
) -> "Policy":
    """Named model, local checkpoint folder or Hugging Face Hub id -> Policy (see the module docstring)."""
    import torch

    if backend not in CHOICES["backend"]:
        raise UserError(f"backend {backend!r} is not one of {', '.join(CHOICES['backend'])}")
    _check_rollout_dtype(rollout_dtype)  # before the (slow) model load
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _torch_dtype(dtype, device)
    name = str(name_or_path)

    if name in NAMED_MODELS:
        path, source = resolve_named(NAMED_MODELS[name], cache_dir, verbose)
    elif Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser())
        if not (Path(path) / "config.json").exists():
            raise UserError(f"model folder {path} has no config.json: pass a folder written by save_pretrained")
        source = f"local checkpoint {path}"
    elif "/" in name and not name.startswith((".", "/", "~")):
        path, source = name, f"Hugging Face Hub ({name})"
    else:
        raise UserError(
            f"model {name!r} is neither a named model ({', '.join(NAMED_MODELS)}), a local checkpoint folder, "
            "nor a Hugging Face Hub id (org/name)"
        )

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as e:
        if path != name or Path(name).expanduser().is_dir():
            raise
        raise UserError(
            f"could not load model {name!r} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0]}); "
            f"check the id, the network (HF_HUB_OFFLINE), or use a named model ({', '.join(NAMED_MODELS)})"
        ) from e
    model.to(device)
    policy = Policy(model, tokenizer, name=name, source=source, path=path, backend=backend, rollout_dtype=rollout_dtype)
    if verbose:
        _log(f"loaded {policy.describe()}")
    return policy


def _engine_dtype(rollout_dtype: str, model) -> str | None:
    """`rollout_dtype` -> the engine's dtype. "model": the model's own (greedy output equals HF generate's);
    "auto": bfloat16 where it is fast (sampling for RL; the weights stay float32 for training), else the model's."""
    if rollout_dtype == "model":
        return None
    if rollout_dtype == "auto":
        return "bfloat16" if fast_bf16(next(model.parameters()).device) else None
    return rollout_dtype


def _make_engine(model, tokenizer, *, required: bool, dtype: str | None = None):
    """The CPU rollout engine when it can serve this model, else None (or a UserError when `required`)."""
    try:
        from cocos.generation.backends.engine import Engine, supports  # imports torch: only when an engine is asked for
    except ImportError as e:
        if required:
            raise UserError(f"backend 'engine' is not available ({e}); use backend 'hf' or 'auto'") from e
        return None
    if not supports(model):
        if required:
            raise UserError(f"backend 'engine' cannot serve {type(model).__name__}; use backend 'hf' or 'auto'")
        return None
    return Engine(model, tokenizer, dtype=dtype)


class Policy:
    """A causal LM and its tokenizer, with a `generate` backend (HF, the fast engine, or vLLM)."""

    def __init__(self, model, tokenizer, *, name: str = "", source: str = "", path: str = "", backend: str = "hf",
                 rollout_dtype: str = "model"):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "") or type(model).__name__
        self.source = source or "in-memory model"
        self.path = path
        self.backend = "hf"
        self._backend_impl: Backend | None = None
        _check_rollout_dtype(rollout_dtype)
        if backend in ("auto", "engine"):
            engine = _make_engine(model, tokenizer, required=backend == "engine", dtype=_engine_dtype(rollout_dtype, model))
            if engine is not None:
                self.backend, self._backend_impl = "engine", engine
        elif backend == "vllm":
            from cocos.generation.backends.vllm import VLLMBackend  # imports vLLM only when asked for

            self.backend = "vllm"
            self._backend_impl = VLLMBackend(model, tokenizer, path=path, dtype=_engine_dtype(rollout_dtype, model))
        if self._backend_impl is None:
            self._backend_impl = HFBackend(model, tokenizer)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def describe(self) -> str:
        n = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters()) / 1e6  # ZeRO-3: whole sizes
        return (
            f"{self.name}: {type(self.model).__name__} {n:.0f}M params, {str(self.dtype).replace('torch.', '')} "
            f"on {self.device}, backend {self.backend}{self._rollout_dtype_note()}; source: {self.source}"
        )

    def _rollout_dtype_note(self) -> str:
        engine_dtype = getattr(self._backend_impl, "dtype", None)
        notes = [f"{str(engine_dtype).replace('torch.', '')} rollouts"] if engine_dtype not in (None, self.dtype) else []
        if getattr(self._backend_impl, "_kernel", None) is not None:
            notes.append("C++ decode kernel")
        return f" ({', '.join(notes)})" if notes else ""

    def sync_weights(self) -> None:
        """Push the live weights into a backend that keeps its own copy (vLLM); a no-op otherwise."""
        self._backend_impl.sync_weights()

    def generate(self, prompts: list[str], sampling: Sampling | None = None, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False, **sampling_fields) -> list[Generation]:
        """`n` samples of each prompt under `sampling` (module docstring; keywords instead of the record: the
        convenience form)."""
        if isinstance(prompts, str):
            raise UserError("prompts must be a list of strings, not one string")
        if sampling is None:
            sampling = Sampling(**sampling_fields)
        elif sampling_fields:
            raise UserError(f"generate: pass the sampling settings as a Sampling record or as keywords, not both "
                            f"(got a record and {', '.join(sampling_fields)})")
        if n < 1 or batch_size < 1:
            raise UserError(f"bad generate arguments: n={n} (>= 1), batch_size={batch_size} (>= 1)")
        return self._backend_impl.generate(list(prompts), sampling, n=n, batch_size=batch_size, progress=progress)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt -> ids as every backend feeds them (cocos.generation.sampling.encode_prompt)."""
        return encode_prompt(self.tokenizer, prompt)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cocos.generation.policy", description="try a model (python -m "
                                "cocos.generation.models lists and fetches the named models)")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="greedy completion of one prompt")
    g.add_argument("prompt")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--dtype", default="auto")
    g.add_argument("--backend", default="auto")
    args = p.parse_args(argv)
    try:
        policy = load_policy(args.model, dtype=args.dtype, backend=args.backend)
        t0 = time.time()
        prompt = args.prompt.encode().decode("unicode_escape")
        g = policy.generate([prompt], Sampling(max_new_tokens=args.max_new_tokens))[0]
        print(g.text)
        _log(f"{len(g.completion_ids)} tokens in {time.time() - t0:.1f} s, finish: {g.finish_reason}")
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
