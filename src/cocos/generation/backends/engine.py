"""Rollout engine: fast batched sampling for Llama-architecture models on CPU (issue 6).

    from cocos.generation.backends.engine import Engine, supports
    from cocos.generation.sampling import Sampling
    if supports(model):
        engine = Engine(model, tokenizer)            # dtype=None: run in the model's own dtype
        gens = engine.generate(prompts, Sampling(max_new_tokens=512, temperature=0.9, seed=0), n=4)

`generate` returns one `cocos.generation.sampling.Generation` per (prompt, sample), grouped by prompt, in input order.
Identical prompts (or `n` > 1) are prefilled once and share one KV cache entry. This module holds the scheduler
and the KV cache; engine_runner.py the weights and forward passes, engine_ops.py the ops and the C++ kernel.

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

import os
from collections import deque

import torch

from cocos.errors import UserError
from cocos.generation.backends import Backend, engine_ops
from cocos.generation.backends.engine_ops import sample_tokens, sampled_logprobs
from cocos.generation.backends.engine_runner import ModelRunner
from cocos.generation.sampling import Generation, Sampling, encode_prompts, eos_ids, stop_end

_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}
_OWN_CHUNK = 64  # the own KV cache grows by this many tokens at a time


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



class _Group:
    """One distinct prompt and the requests (samples) that use it."""

    def __init__(self, ids):
        self.ids = ids
        self.reqs = deque()
        self.entry = -1  # prefix pool entry while prefilled
        self.active = 0  # rows decoding now
        self.logits = None  # last-position logits, kept until every request has been admitted


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
        self._cache = None  # (key, k_pre, v_pre, k_own, v_own)
        self._stop_masks = {}
        self.stats = {}  # counters of the last generate(): prefills, prefill_tokens, cached_tokens, steps, max_rows

    # ---------------------------------------------------------------- KV cache
    # Layout: K stored transposed ([layers, n, kv heads, head_dim, length]) and V as [.., length, head_dim]:
    # scores are then q @ K and outputs p @ V without a transpose, and the kernel's inner loops run along
    # contiguous positions (K) and dimensions (V). The torch path reads the whole allocated length (masked),
    # so its batched matmuls get whole tensors (a strided slice would be copied first); the own cache therefore
    # grows in chunks of _OWN_CHUNK tokens instead of being max_new_tokens long. The kernel reads true lengths.
    def _zeros_kv(self, n, length):
        # zeros: masked positions must not hold NaN (0 * NaN would leak through p @ V)
        k = torch.zeros(self.n_layers, n, self.n_kv, self.head_dim, length, dtype=self.dtype)
        v = torch.zeros(self.n_layers, n, self.n_kv, length, self.head_dim, dtype=self.dtype)
        return k, v

    def _alloc_pool(self, entries, pre_len):
        key = (entries, pre_len, self.dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = None
            self._cache = (key, *self._zeros_kv(entries, pre_len))
        return self._cache[1:]

    def _grow_own(self, k_own, v_own, length):
        k, v = self._zeros_kv(k_own.shape[1], length)
        old = k_own.shape[-1]
        k[..., :old] = k_own
        v[..., :old, :] = v_own
        return k, v

    def _plan(self, n_req, n_groups, max_prompt, max_new):
        """Slots S, pool entries P and their lengths, within the KV memory budget."""
        per_tok = self.n_layers * 2 * self.n_kv * self.head_dim * torch.finfo(self.dtype).bits // 8
        pre_len = -(-max_prompt // 32) * 32  # multiples of 32: the kernel reads whole blocks of 32 positions
        own_len = -(-max(1, max_new) // 32) * 32
        slots = min(self.max_batch, n_req)
        while slots > 1 and slots * own_len * per_tok + pre_len * per_tok > self.kv_budget:
            slots //= 2
        entries = min(slots, n_groups, max(1, (self.kv_budget - slots * own_len * per_tok) // (pre_len * per_tok)))
        return slots, entries, pre_len, own_len

    # ---------------------------------------------------------------- stop strings
    def _stop_mask(self, stop):
        """Tokens whose text contains the last character of a stop string: only they can complete one."""
        if stop not in self._stop_masks:
            lasts = {s[-1] for s in stop}
            if all(ch.isascii() for ch in lasts):
                pieces = self.tokenizer.batch_decode([[i] for i in range(self.vocab)])
                mask = torch.tensor([any(ch in p for ch in lasts) for p in pieces])
            else:
                mask = torch.ones(self.vocab, dtype=torch.bool)
            self._stop_masks[stop] = mask
        return self._stop_masks[stop]

    # ---------------------------------------------------------------- the scheduler
    def generate(self, prompts: list[str], sampling: Sampling, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False) -> list[Generation]:
        """Sample `n` completions per prompt: len(prompts) * n Generations, grouped by prompt, in order.
        `batch_size` is not used: up to `max_batch` sequences decode together, joining as others finish."""
        if isinstance(prompts, str):
            raise UserError("prompts: pass a list of strings, not one string")
        if n < 1:
            raise UserError(f"n: must be >= 1, got {n}")
        s = sampling  # checked when it was made
        with torch.inference_mode():
            return self._generate(prompts, s.max_new_tokens, s.temperature, s.top_p, s.seed, s.stop, progress, n)

    def _generate(self, prompts, max_new_tokens, temperature, top_p, seed, stop, progress, n):
        self._sync()
        tok = self.tokenizer
        stats = self.stats = dict(prefills=0, prefill_tokens=0, cached_tokens=0, steps=0, max_rows=0)
        # requests r = i * n + j; identical prompts share one group (one prefill, one KV entry)
        distinct = list(dict.fromkeys(prompts))
        encoded = dict(zip(distinct, encode_prompts(tok, distinct)))
        groups, req_group, req_ids = {}, [], []
        for prompt in prompts:
            g = groups.get(prompt)
            if g is None:
                g = groups[prompt] = _Group(encoded[prompt])
            for _ in range(n):
                g.reqs.append(len(req_group))
                req_group.append(g)
                req_ids.append(g.ids)
        N = len(req_group)
        out = [[] for _ in range(N)]
        out_lp = [[] for _ in range(N)]  # the sampler's log-prob of each token (Generation.logprobs)
        reasons = ["length"] * N
        if N == 0 or max_new_tokens == 0:
            return [Generation(text="", prompt_ids=list(req_ids[r]), completion_ids=[], finish_reason="length",
                               logprobs=[]) for r in range(N)]

        slots, entries, pre_len, own_len = self._plan(N, len(groups), max(len(g.ids) for g in groups.values()),
                                                      max_new_tokens)
        k_pre, v_pre = self._alloc_pool(entries, pre_len)
        k_own, v_own = self._zeros_kv(slots, min(_OWN_CHUNK, own_len))
        # per-request uniforms: sample j of request r uses u[r, j] whatever the batching (seeded => reproducible)
        u = torch.zeros(N, max_new_tokens)
        if temperature > 0:
            base = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
            for r in range(N):
                gen = torch.Generator().manual_seed((base * 6364136223846793005 + r * 1442695040888963407 + 1) % 2**63)
                u[r] = torch.rand(max_new_tokens, generator=gen)
        stop_mask = self._stop_mask(stop) if stop else None
        window = max((len(s.encode()) for s in stop), default=0) + 2

        waiting = deque(groups.values())
        pool = []  # pool entry index -> group
        rows = []  # row -> request
        row_group = []
        own = torch.zeros(0, dtype=torch.long)  # own-cache length per row
        nxt = torch.zeros(0, dtype=torch.long)  # next input token per row
        st = None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=N, desc="generate", unit="seq")

        def finished(r, t, lp):
            """Append token t (sampled with log-prob lp) to request r; return True when r is done."""
            ids = out[r]
            ids.append(t)
            out_lp[r].append(lp)
            if t in self.eos:
                reasons[r] = "eos"
                return True
            if stop_mask is not None and stop_mask[t]:
                tail = tok.decode(ids[-window:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                if any(s in tail for s in stop):
                    reasons[r] = "stop"
                    return True
            return len(ids) >= max_new_tokens

        def release(g):
            e, last = g.entry, len(pool) - 1
            if e != last:  # keep live entries in 0..P-1: move the last one into the hole
                moved = pool[last]
                n_tok = len(moved.ids)
                k_pre[:, e, ..., :n_tok] = k_pre[:, last, ..., :n_tok]
                v_pre[:, e, :, :n_tok] = v_pre[:, last, :, :n_tok]
                moved.entry, pool[e] = e, moved
            pool.pop()
            g.entry = -1

        def prefill(pending):
            """Prefill the pending (group, cached) pairs in one batch; each group keeps its last logits."""
            if pending:
                logits = self._prefill([(g.ids, g.entry, c) for g, c in pending], k_pre, v_pre)
                for (g, cached), lg in zip(pending, logits):
                    g.logits = lg
                    stats["prefills"] += 1
                    stats["prefill_tokens"] += len(g.ids) - cached
                    stats["cached_tokens"] += cached
                pending.clear()

        while waiting or rows:
            changed = False
            # admit: waiting prompts into free pool entries (prefilled together), their samples into free rows
            new_rows, new_toks = [], []
            admitted, pending, free = [], [], slots - len(rows)
            while waiting and free > 0:
                g = waiting[0]
                if g.entry < 0:
                    if len(pool) >= entries:
                        break
                    best, cached = None, 0
                    for other in pool:  # longest prompt prefix already in the pool
                        c = len(os.path.commonprefix([other.ids, g.ids]))
                        if c > cached:
                            best, cached = other, c
                    cached = min(cached, len(g.ids) - 1)
                    if cached < self.min_shared_prefix:
                        cached = 0
                    if cached and any(best is p for p, _ in pending) or sum(len(p.ids) for p, _ in pending) >= 512:
                        prefill(pending)  # the prefix to share must be computed first; or the batch is large
                    g.entry = len(pool)
                    pool.append(g)
                    if cached:
                        k_pre[:, g.entry, ..., :cached] = k_pre[:, best.entry, ..., :cached]
                        v_pre[:, g.entry, :, :cached] = v_pre[:, best.entry, :, :cached]
                    pending.append((g, cached))
                take = min(len(g.reqs), free)
                free -= take
                admitted.append((g, [g.reqs.popleft() for _ in range(take)]))
                if not g.reqs:
                    waiting.popleft()
            prefill(pending)
            for g, reqs in admitted:
                lg = g.logits.expand(len(reqs), -1)
                first = sample_tokens(lg, u[reqs, 0], temperature, top_p)
                first_lp = sampled_logprobs(lg, first, temperature).tolist()
                for r, t, lp in zip(reqs, first.tolist(), first_lp):
                    if finished(r, t, lp):
                        if bar is not None:
                            bar.update(1)
                    else:
                        new_rows.append(r)
                        new_toks.append(t)
                        g.active += 1
                if not g.reqs:
                    g.logits = None
                    if g.active == 0:
                        release(g)
            if new_rows:
                rows += new_rows
                row_group += [req_group[r] for r in new_rows]
                own = torch.cat([own, torch.zeros(len(new_rows), dtype=torch.long)])
                nxt = torch.cat([nxt, torch.tensor(new_toks, dtype=torch.long)])
                changed = True
            if not rows:
                continue
            if changed or st is None:
                st = self._layout(row_group, pool, k_pre.shape[-1])
            B = len(rows)
            stats["steps"] += 1
            stats["max_rows"] = max(stats["max_rows"], B)
            pos = st["pre_len"] + own
            need = int(own.max()) + 1
            if need > k_own.shape[-1]:
                k_own, v_own = self._grow_own(k_own, v_own, min(own_len, k_own.shape[-1] + _OWN_CHUNK))
            logits = self._decode(nxt, pos, own, st, k_pre, v_pre, k_own, v_own)
            own += 1
            us = u[rows, own.clamp(max=max_new_tokens - 1)] if temperature > 0 else u[:B, 0]
            if temperature == 0 and self._kernel is not None:
                new = self._kernel.argmax_rows(logits)  # = logits.argmax(-1), several times faster
            else:
                new = sample_tokens(logits, us, temperature, top_p)
            nxt = new
            new_lp = sampled_logprobs(logits, new, temperature).tolist()
            done = [b for b, (r, t, lp) in enumerate(zip(rows, new.tolist(), new_lp)) if finished(r, t, lp)]
            if done:
                for b in reversed(done):  # drop finished rows: the last row moves into the hole
                    g, last = row_group[b], len(rows) - 1
                    if b != last:
                        n_tok = int(own[last])
                        k_own[:, b, ..., :n_tok] = k_own[:, last, ..., :n_tok]
                        v_own[:, b, :, :n_tok] = v_own[:, last, :, :n_tok]
                        rows[b], row_group[b] = rows[last], row_group[last]
                        own[b], nxt[b] = own[last], nxt[last]
                    rows.pop()
                    row_group.pop()
                    own, nxt = own[:last], nxt[:last]
                    g.active -= 1
                    if g.active == 0 and not g.reqs:
                        release(g)
                    if bar is not None:
                        bar.update(1)
                st = None
        if bar is not None:
            bar.close()

        gens = []
        for r in range(N):
            text = tok.decode(out[r], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if reasons[r] == "stop":
                text = text[: stop_end(text, stop)]
            gens.append(Generation(text=text, prompt_ids=list(req_ids[r]), completion_ids=out[r],
                                   finish_reason=reasons[r], logprobs=out_lp[r]))
        return gens
