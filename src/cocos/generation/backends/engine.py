"""Rollout engine: fast batched sampling for Llama-architecture models on CPU.

    from cocos.generation.backends.engine import Engine, supports
    from cocos.generation.sampling import Sampling
    if supports(model):
        engine = Engine(model, tokenizer)            # dtype=None: run in the model's own dtype
        gens = engine.generate(prompts, Sampling(max_new_tokens=512, temperature=0.9, seed=0), n=4)

`generate` returns one `cocos.generation.sampling.Generation` per (prompt, sample), grouped by prompt, in input order.
A prompt's n samples (and those of any repeat of the prompt) are prefilled once and share one KV cache entry.

Structure (after nano-vllm's scheduler / cache / runner / sampler): `Engine.generate` turns the prompts into
`Sequence` records and loops: the scheduler (engine_sched.py) admits prompts into prefix pool entries and their
sequences into rows, the runner (engine_runner.py: weights, prefill, decode step) computes, the sampler
(engine_sampler.py) picks each token and says when a sequence ends; engine_cache.py holds the KV tensors,
engine_ops.py the ops and the C++ kernel.

How it is fast (HF `generate` pads a fixed batch to its longest sequence and recomputes every prompt):
- continuous batching: up to `max_batch` sequences decode together; one that hits a stop string, EOS or its
  token budget leaves at once and a waiting one takes its place;
- prefix sharing: every distinct prompt is prefilled once into a *prefix pool* entry; all its samples read that
  entry together at decode time (one matrix product per entry instead of one matrix-vector product per sample);
  a new prompt that starts like one already in the pool (few-shot examples, a turn-2 prompt extending a turn-1
  prompt) copies the common part of the KV cache instead of recomputing it (parts of 64 tokens or more);
- batched prefill: the prompts admitted together run their linears as one matrix (~25% faster per token);
- static KV cache: the prefix pool (entries x prompt length) and the per-sequence *own* cache (rows x generated
  length, grown 64 tokens at a time up to max_new_tokens) are preallocated tensors over all layers, K stored
  transposed; running sequences are kept in rows 0..B-1 and live pool entries in 0..P-1 (a finished one is
  overwritten by the last), so attention reads whole contiguous tensors (masked), never a gathered copy;
- one softmax over [prefix | own] scores per row, fp32 softmax, SDPA for the prefill;
- bf16 when asked (`dtype="bfloat16"`): this CPU has AMX/avx512_bf16; bf16 linears measured 3x faster than
  fp32 at 32 rows, 5x at 300 rows (one thread);
- below float32, a small C++ kernel (csrc/decode_attention.cpp, built once per machine by torch's
  cpp_extension, see engine_ops.load_kernel) does each layer's decode attention in one parallel loop (RoPE, KV
  write, attention over each row's true prompt and own lengths: the batched matmuls ran at ~3 us of overhead
  per (row, head) problem and paid for the longest prompt), the residual add + RMSNorm, SiLU * up and the
  greedy argmax; bf16 weights are pre-packed for oneDNN. float32 keeps the torch ops (greedy equal to HF generate). Without a
  compiler the torch ops run everywhere. torch.compile of the decode step was tried: 520 s to compile, then
  recompiles as batch shapes change; not used.

Live weights. With dtype equal to the model's, the engine reads the model's parameter tensors themselves (no
copy): an optimiser step is seen by the next `generate`. With another dtype (e.g. bf16 rollouts of an fp32
trainer) it keeps cast copies (with q/k/v and gate/up fused) and re-casts them at the start of `generate`
whenever a parameter's in-place version counter, storage or identity changed — so `optimizer.step()` and
`load_state_dict` are picked up automatically; `refresh()` forces a re-cast (use it if you change weights
through `.data` behind autograd's back).

Not served (supports() is False, use HF generate): other architectures (e.g. Gemma 3), PEFT/LoRA-wrapped
layers, sliding-window attention, dynamic RoPE, non-CPU devices.
"""

from __future__ import annotations

import torch

from cocos.errors import UserError
from cocos.generation.backends import Backend, engine_ops
from cocos.generation.backends.engine_cache import KVCache, KVShape, plan
from cocos.generation.backends.engine_runner import ModelRunner
from cocos.generation.backends.engine_sampler import Sampler, stop_token_mask
from cocos.generation.backends.engine_sched import Prefill, PromptGroup, Scheduler, make_sequences
from cocos.generation.sampling import Generation, Sampling, encode_prompts, eos_ids

_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}
_OWN_CHUNK = 64  # the own KV cache grows by this many tokens at a time
_Group = PromptGroup  # the name tests/test_engine.py builds decode layouts with


def supports(model) -> bool:
    """True when the engine can serve `model` exactly (else fall back to HF generate)."""
    cfg = getattr(model, "config", None)
    if type(model).__name__ not in _ARCHS or cfg is None:
        return False  # also excludes PeftModel wrappers
    try:
        if next(model.parameters()).device.type != "cpu":
            return False
        if getattr(cfg, "hidden_act", "silu") != "silu":
            return False
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
            return False
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            return False
        inner = model.model
        if getattr(inner.rotary_emb, "rope_type", "default") not in _STATIC_ROPE:
            return False
        linears = [model.lm_head]
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            linears += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        # exactly nn.Linear: LoRA / quantised layers would be silently ignored otherwise
        return all(type(lin) is torch.nn.Linear for lin in linears)
    except (AttributeError, StopIteration):
        return False


class Engine(ModelRunner, Backend):
    def __init__(self, model, tokenizer, *, dtype=None, max_batch: int = 64, kv_budget_gb: float = 4.0,
                 fuse: bool | None = None, kernel: bool | None = None, min_shared_prefix: int = 64):
        if not supports(model):
            raise UserError(f"backend: the rollout engine cannot serve {type(model).__name__}; use backend='hf'")
        self.model, self.tokenizer = model, tokenizer
        cfg = model.config
        self.dtype = {None: next(model.parameters()).dtype, "auto": next(model.parameters()).dtype,
                      "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, dtype)
        if not isinstance(self.dtype, torch.dtype):
            raise UserError(f"dtype: unknown engine dtype {dtype!r}; use 'float32' or 'bfloat16'")
        if max_batch < 1:
            raise UserError("max_batch: must be >= 1")
        self.max_batch, self.kv_budget = max_batch, int(kv_budget_gb * 2**30)
        # A prompt reuses another's KV only for a shared prefix this long (shorter ones are recomputed: cheap,
        # and the prompt then takes the same unmasked attention call as HF's). MBPP prompts share ~17 tokens
        # of instructions; few-shot prefixes (~600 tokens) and later turns (the whole earlier prompt) are shared.
        self.min_shared_prefix = max(1, min_shared_prefix)
        self.fuse = fuse
        attn = model.model.layers[0].self_attn
        self.n_layers = len(model.model.layers)
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.rep = self.n_heads // self.n_kv
        self.eps = cfg.rms_norm_eps
        self.vocab = model.lm_head.weight.shape[0]
        # The fused kernel by default below float32 (bf16 rollouts). float32 keeps the torch path, whose greedy
        # output equals HF generate token for token; the kernel sums in another order.
        module = engine_ops.load_kernel() if kernel is not False else None
        if kernel is None:
            kernel = self.dtype != torch.float32 and self.head_dim % 64 == 0 and module is not None
        if kernel and self.head_dim % 64:
            raise UserError(f"kernel: the attention kernel needs head_dim a multiple of 64 (got {self.head_dim})")
        if kernel and module is None:
            raise UserError(f"kernel: the engine's attention kernel could not be built ({engine_ops.kernel_error()}); "
                            "pass kernel=False (torch ops) or install a C++ compiler and `pip install ninja`")
        self._kernel = module if kernel else None
        self.eos = set(eos_ids(model, tokenizer))
        self._sig = None
        self._w = None
        self._kv = KVShape(self.n_layers, self.n_kv, self.head_dim, self.dtype)
        self._pool_kv = None  # (key, k_pre, v_pre): the prefix pool, kept for the next call
        self._stop_masks = {}
        self.stats = {}  # counters of the last generate(): prefills, prefill_tokens, cached_tokens, steps, max_rows

    def _pool(self, entries: int, pre_len: int):
        """The prefix pool's K and V, kept across generate calls while its size is the one asked for."""
        key = (entries, pre_len, self.dtype)
        if self._pool_kv is None or self._pool_kv[0] != key:
            self._pool_kv = None  # free the old pool before allocating the new one
            self._pool_kv = (key, *self._kv.zeros(entries, pre_len))
        return self._pool_kv[1:]

    def _stop_mask(self, stop: tuple[str, ...]) -> torch.Tensor | None:
        if stop and stop not in self._stop_masks:
            self._stop_masks[stop] = stop_token_mask(self.tokenizer, self.vocab, stop)
        return self._stop_masks.get(stop)

    # ---------------------------------------------------------------- generate: scheduler, runner, sampler
    def generate(self, prompts: list[str], sampling: Sampling, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False) -> list[Generation]:
        """Sample `n` completions per prompt: len(prompts) * n Generations, grouped by prompt, in order.
        `batch_size` is not used: up to `max_batch` sequences decode together, joining as others finish."""
        if isinstance(prompts, str):
            raise UserError("prompts: pass a list of strings, not one string")
        if n < 1:
            raise UserError(f"n: must be >= 1, got {n}")
        with torch.inference_mode():
            return self._generate(list(prompts), sampling, n, progress)

    def _generate(self, prompts: list[str], sampling: Sampling, n: int, progress: bool) -> list[Generation]:
        self._sync()
        self.stats = dict(prefills=0, prefill_tokens=0, cached_tokens=0, steps=0, max_rows=0)
        distinct = list(dict.fromkeys(prompts))
        seqs, groups = make_sequences(prompts, dict(zip(distinct, encode_prompts(self.tokenizer, distinct))), n)
        if not seqs:
            return []
        slots, entries, pre_len, own_len = plan(self._kv, self.kv_budget, self.max_batch, len(seqs), len(groups),
                                                max(len(g.ids) for g in groups), sampling.max_new_tokens)
        cache = KVCache(self._kv, self._pool(entries, pre_len), slots, own_len, _OWN_CHUNK)
        sampler = Sampler(sampling, len(seqs), self.tokenizer, self.eos, self._stop_mask(sampling.stop), self._kernel)
        sched = Scheduler(groups, cache, slots, entries, self.min_shared_prefix)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(seqs), desc="generate", unit="seq")
        while sched.busy:
            done = self._admit(sched, sampler)
            if sched.running:
                done += self._step(sched, sampler)
            if bar is not None and done:
                bar.update(done)
        if bar is not None:
            bar.close()
        return [sampler.generation(s) for s in seqs]

    def _admit(self, sched: Scheduler, sampler: Sampler) -> int:
        """Admit what fits, prefill it, draw the admitted sequences' first tokens. -> how many ended there."""
        admission = sched.admit()
        for batch in admission.batches:
            self._run_prefill(batch, sched.cache)
        ended, joining, first_tokens = 0, [], []
        for g, seqs in admission.admitted:
            for seq, t, lp in zip(seqs, *sampler.first(g.logits, seqs)):
                if sampler.append(seq, t, lp):
                    ended += 1
                else:
                    joining.append(seq)
                    first_tokens.append(t)
                    g.active += 1
            sched.admitted(g)
        sched.join(joining, first_tokens)
        return ended

    def _run_prefill(self, batch: list[Prefill], cache: KVCache) -> None:
        """Prefill one batch of prompts into their pool entries (after copying any shared prefix); each group keeps
        its last-position logits for its sequences' first tokens."""
        for p in batch:
            if p.cached:
                cache.copy_entry(p.source.entry, p.group.entry, p.cached)
        logits = self._prefill([(p.group.ids, p.group.entry, p.cached) for p in batch], cache.k_pre, cache.v_pre)
        for p, lg in zip(batch, logits):
            p.group.logits = lg
            self.stats["prefills"] += 1
            self.stats["prefill_tokens"] += len(p.group.ids) - p.cached
            self.stats["cached_tokens"] += p.cached

    def _step(self, sched: Scheduler, sampler: Sampler) -> int:
        """One decode step of every running sequence. -> how many ended."""
        cache, seqs, own = sched.cache, sched.running, sched.own
        if sched.layout is None:
            sched.layout = self._layout([s.group for s in seqs], sched.pool, cache.pre_len)
        st = sched.layout
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(seqs))
        cache.reserve(int(own.max()) + 1)
        logits = self._decode(sched.nxt, st["pre_len"] + own, own, st, cache.k_pre, cache.v_pre, cache.k_own,
                              cache.v_own)
        own += 1
        tokens, logprobs = sampler.step(logits, seqs, own)
        sched.nxt = tokens
        ended = [b for b, (seq, t, lp) in enumerate(zip(seqs, tokens.tolist(), logprobs)) if sampler.append(seq, t, lp)]
        if ended:
            sched.finish(ended)
        return len(ended)
