"""Rollout engine: exactness against HF generate, continuous batching, stops, seeds, prefix sharing,
live weights. Tiny Llama built from a config and a byte-level BPE tokenizer trained here (no downloads)."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cocos.errors import UserError
from cocos.generation.backends.engine import Engine, supports
from cocos.generation.backends.engine_ops import sample_tokens
from cocos.generation.sampling import Sampling

CORPUS = [
    "You are an expert Python programmer, and here is your task: Write a function to add two numbers.",
    "def add(a, b):\n    return a + b\n[DONE]\nassert add(1, 2) == 3\n[BEGIN]\n[CORRECT]\n",
    "the quick brown fox jumps over the lazy dog; print(sorted(set(xs)))",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models gain nothing from threads, and on a loaded 2-core machine OpenMP spinning makes them crawl
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(CORPUS * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", pad_token="<pad>")


def make_model(tok, seed=0, hidden=64, heads=4, kv_heads=2):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                      rope_theta=100000.0, tie_word_embeddings=True, initializer_range=0.2,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(tok)


PROMPTS = [
    "You are an expert Python programmer, and here is your task: Write a function",
    "def add(a, b):",
    "x",
    "assert add(1, 2) == 3\n[BEGIN]\n",
    "the quick brown fox jumps over the lazy dog; print(sorted(set(xs)))\n",
]


def hf_greedy(model, tok, prompt, max_new, stop=()):
    """HF generate, batch 1, truncated at the first stop string: (completion ids, text, finish reason)."""
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new, do_sample=False)[0, enc.input_ids.shape[1]:].tolist()
    for i in range(len(out)):
        if out[i] == tok.eos_token_id:
            return out[: i + 1], tok.decode(out[: i + 1], skip_special_tokens=True), "eos"
        text = tok.decode(out[: i + 1], skip_special_tokens=True)
        hit = [text.index(s) + len(s) for s in stop if s in text]
        if hit:
            return out[: i + 1], text[: min(hit)], "stop"
    return out, tok.decode(out, skip_special_tokens=True), "length"


def test_supports(model, tok):
    assert supports(model)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    assert not supports(gpt2)
    with pytest.raises(UserError):
        Engine(gpt2, tok)
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(make_model(tok), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert not supports(lora) and not supports(lora.base_model.model)  # LoRA layers would be ignored


def test_greedy_matches_hf_generate(model, tok, monkeypatch):
    # the own KV cache grows several times on the way
    monkeypatch.setattr("cocos.generation.backends.engine._OWN_CHUNK", 5)
    gens = Engine(model, tok, max_batch=2).generate(PROMPTS, Sampling(max_new_tokens=24, stop=()))
    for prompt, g in zip(PROMPTS, gens):
        ids, text, reason = hf_greedy(model, tok, prompt, 24)
        assert g.completion_ids == ids
        assert (g.text, g.finish_reason) == (text, reason)
        assert g.prompt_ids == tok(prompt)["input_ids"]


@pytest.mark.parametrize("max_batch", [1, 3, 64])
def test_continuous_batching_complete_and_in_order(model, tok, max_batch, monkeypatch):
    monkeypatch.setattr("cocos.generation.backends.engine._OWN_CHUNK", 3)
    # stop at the first "e": sequences end at different steps, so rows leave and waiting prompts join
    prompts = PROMPTS * 2
    eng = Engine(model, tok, max_batch=max_batch)
    gens = eng.generate(prompts, Sampling(max_new_tokens=20, stop=("e",)))
    refs = [hf_greedy(model, tok, p, 20, stop=("e",)) for p in PROMPTS] * 2
    assert len(gens) == len(prompts)
    for g, (ids, text, reason) in zip(gens, refs):
        assert (g.completion_ids, g.text, g.finish_reason) == (ids, text, reason)
    assert len({len(g.completion_ids) for g in gens}) > 1  # the test really mixes lengths
    assert eng.stats["max_rows"] <= max_batch


def test_stop_string_spanning_tokens(model, tok):
    prompt = PROMPTS[1]
    full = Engine(model, tok).generate([prompt], Sampling(max_new_tokens=30, stop=()))[0]
    pieces = [tok.decode(full.completion_ids[: i + 1]) for i in range(len(full.completion_ids))]
    # a stop string from the last char of token 4 to the first char of token 6: it spans 3 tokens
    start, end = len(pieces[3]) - 1, len(pieces[5]) + 1
    stop = pieces[-1][start:end]
    assert pieces[-1].find(stop) == start, "pick a stop string that first occurs where we cut"
    g = Engine(model, tok).generate([prompt], Sampling(max_new_tokens=30, stop=("never", stop)))[0]
    assert g.finish_reason == "stop"
    assert g.completion_ids == full.completion_ids[:7]
    assert g.text == pieces[-1][:end] and g.text.endswith(stop)


def test_stop_done_default_and_eos(tok):
    # make "[DONE]" the greedy continuation: train the tiny model on one repeated string for a few steps
    model = make_model(tok, seed=1)
    ids = tok("[BEGIN]\nreturn a + b\n[DONE]" * 6, return_tensors="pt").input_ids
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(40):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    g = Engine(model, tok).generate(["[BEGIN]\nreturn a + b\n[DONE][BEGIN]\n"], Sampling(max_new_tokens=40))[0]
    assert g.finish_reason == "stop" and g.text.endswith("[DONE]") and g.text.count("[DONE]") == 1
    assert tok.decode(g.completion_ids).endswith("[DONE]")  # completion ids end with the token closing it


def test_seeded_sampling_reproducible(model, tok):
    eng = Engine(model, tok, max_batch=2)
    kw = dict(max_new_tokens=16, temperature=0.9, top_p=0.9, stop=())
    a = eng.generate(PROMPTS, Sampling(seed=1, **kw))
    b = eng.generate(PROMPTS, Sampling(seed=1, **kw))
    c = Engine(model, tok, max_batch=64).generate(PROMPTS, Sampling(seed=1, **kw))  # other batching, same samples
    d = eng.generate(PROMPTS, Sampling(seed=2, **kw))
    ids = lambda gs: [g.completion_ids for g in gs]
    assert ids(a) == ids(b) == ids(c)
    assert ids(a) != ids(d)
    # the k samples of one prompt are different draws
    k = eng.generate(PROMPTS[:1], Sampling(seed=3, **kw), n=4)
    assert len({tuple(g.completion_ids) for g in k}) > 1


def test_sampler_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, -1)
    u = torch.rand(20000)
    t = sample_tokens(logits, u, temperature=1.0, top_p=1.0)
    freq = torch.bincount(t, minlength=4).float() / len(t)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)
    # top_p 0.7: the nucleus is {0, 1} (mass before token 1 is 0.64 < 0.7, before token 2 is 0.88)
    t = sample_tokens(logits, u, temperature=1.0, top_p=0.7)
    p = torch.softmax(logits[0, :2], -1)
    freq = torch.bincount(t, minlength=4).float() / len(t)
    assert freq[2:].sum() == 0 and torch.allclose(freq[:2], p, atol=0.015)
    assert sample_tokens(logits[:1], u[:1], 0.0, 1.0).item() == 0


def test_prefix_sharing_same_as_without(model, tok):
    base = "You are an expert Python programmer, and here is your task: "
    prompts = [base + "add two numbers", base + "sort a list", base + "add two numbers", "def add(a, b):"]
    eng = Engine(model, tok, max_batch=8, min_shared_prefix=1)
    gens = eng.generate(prompts, Sampling(max_new_tokens=16, stop=()), n=2)
    # prefill: 3 distinct prompts, the second reuses the common prefix of the first
    a, b = tok(prompts[0])["input_ids"], tok(prompts[1])["input_ids"]
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert common > 5 and eng.stats["prefills"] == 3 and eng.stats["cached_tokens"] == common
    # by default a prefix this short is recomputed (cheaper than the masked prefill), with the same outputs
    short = Engine(model, tok, max_batch=8)
    assert [g.completion_ids for g in short.generate(prompts, Sampling(max_new_tokens=16, stop=()), n=2)] == \
        [g.completion_ids for g in gens]
    assert short.stats["prefills"] == 3 and short.stats["cached_tokens"] == 0
    alone = [Engine(model, tok, max_batch=1).generate([p], Sampling(max_new_tokens=16, stop=()))[0] for p in prompts]
    assert [g.completion_ids for g in gens] == [a.completion_ids for a in alone for _ in range(2)]
    assert [g.completion_ids for g in gens[:2]] == [hf_greedy(model, tok, prompts[0], 16)[0]] * 2


def test_batched_prefill_in_chunks_equals_hf(model, tok, monkeypatch):
    # 6 prompts of ~150 tokens, admitted together: prefilled as one matrix, in chunks of ~512 tokens
    prompts = [f"task {i}: " + " ".join(f"w{(i * 7 + j) % 50}" for j in range(60)) for i in range(6)]
    assert sum(len(tok(p)["input_ids"]) for p in prompts) > 2 * 512
    batches, prefill = [], Engine._prefill
    monkeypatch.setattr(Engine, "_prefill", lambda self, items, *a: batches.append(len(items)) or prefill(self, items, *a))
    gens = Engine(model, tok, max_batch=8).generate(prompts, Sampling(max_new_tokens=8, stop=()))
    assert len(batches) >= 2 and max(batches) > 1 and sum(batches) == 6
    assert [g.completion_ids for g in gens] == [hf_greedy(model, tok, p, 8)[0] for p in prompts]


def test_live_weights_seen_by_next_generate(tok):
    model = make_model(tok, seed=2)
    fp32, bf16 = Engine(model, tok), Engine(model, tok, dtype="bfloat16")
    before = fp32.generate(PROMPTS[:2], Sampling(max_new_tokens=12, stop=()))
    before16 = bf16.generate(PROMPTS[:2], Sampling(max_new_tokens=12, stop=()))
    with torch.no_grad():  # an in-place update, like optimizer.step()
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    after = fp32.generate(PROMPTS[:2], Sampling(max_new_tokens=12, stop=()))
    after16 = bf16.generate(PROMPTS[:2], Sampling(max_new_tokens=12, stop=()))
    assert [g.completion_ids for g in after] != [g.completion_ids for g in before]
    assert [g.completion_ids for g in after] == [hf_greedy(model, tok, p, 12)[0] for p in PROMPTS[:2]]
    fresh16 = Engine(model, tok, dtype="bfloat16").generate(PROMPTS[:2], Sampling(max_new_tokens=12, stop=()))
    assert [g.completion_ids for g in after16] == [g.completion_ids for g in fresh16]
    assert [g.completion_ids for g in after16] != [g.completion_ids for g in before16]


def test_user_errors(model, tok):
    eng = Engine(model, tok)
    with pytest.raises(UserError, match="temperature"):
        eng.generate(["x"], Sampling(temperature=-1))
    with pytest.raises(UserError, match="top_p"):
        eng.generate(["x"], Sampling(top_p=0))
    assert eng.generate([], Sampling(max_new_tokens=4)) == []


def test_policy_rollout_dtype(model, tok, monkeypatch):
    from cocos.generation import policy as policy_mod
    from cocos.generation.policy import Policy

    # "model": the engine runs in the weights' dtype (greedy equals HF generate); "bfloat16": cast copies
    assert Policy(model, tok, backend="engine")._backend_impl.dtype == torch.float32
    bf16 = Policy(model, tok, backend="engine", rollout_dtype="bfloat16")
    assert bf16._backend_impl.dtype == torch.bfloat16 and "bfloat16 rollouts" in bf16.describe()
    assert next(model.parameters()).dtype == torch.float32  # the trained weights are untouched
    # "auto" follows the hardware: bf16 only where bf16 matmuls are fast
    monkeypatch.setattr(policy_mod, "fast_bf16", lambda device: False)
    assert Policy(model, tok, backend="engine", rollout_dtype="auto")._backend_impl.dtype == torch.float32
    monkeypatch.setattr(policy_mod, "fast_bf16", lambda device: True)
    assert Policy(model, tok, backend="engine", rollout_dtype="auto")._backend_impl.dtype == torch.bfloat16
    with pytest.raises(UserError, match="rollout_dtype"):
        Policy(model, tok, backend="engine", rollout_dtype="fp8")


def kernel_or_skip():
    from cocos.generation.backends.engine_ops import load_kernel

    if load_kernel() is None:
        pytest.skip("the engine's attention kernel cannot be built here (no C++ compiler or ninja)")


@pytest.fixture(scope="module")
def model64(tok):
    """head_dim 64 (the kernel's unit), 3 query heads per KV head like SmolLM2."""
    return make_model(tok, seed=4, hidden=192, heads=3, kv_heads=1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_kernel_attention_equals_torch_path(model64, tok, dtype, tol):
    """The fused kernel (RoPE, KV write, attention over [prompt entry | own tokens]) against the torch ops."""
    from cocos.generation.backends.engine import _Group

    kernel_or_skip()
    eng = Engine(model64, tok, dtype=dtype, kernel=True)
    eng._sync()
    H, Hk, D, L = eng.n_heads, eng.n_kv, eng.head_dim, 1
    g = torch.Generator().manual_seed(0)
    # 3 pool entries (prompts of 5, 17, 9 tokens); 5 rows: entry 1 has 3 samples, rows out of entry order
    groups = [_Group(list(range(n))) for n in (5, 17, 9)]
    for e, grp in enumerate(groups):
        grp.entry = e
    row_group = [groups[1], groups[0], groups[1], groups[2], groups[1]]
    own_len = torch.tensor([0, 3, 7, 2, 5])
    B, Lp, Lc = len(row_group), 32, 32
    k_pre, v_pre = torch.randn(L, 4, Hk, D, Lp, generator=g).to(dtype), torch.randn(L, 4, Hk, Lp, D, generator=g).to(dtype)
    k_own, v_own = torch.randn(L, 6, Hk, D, Lc, generator=g).to(dtype), torch.randn(L, 6, Hk, Lc, D, generator=g).to(dtype)
    qkv = torch.randn(B, (H + 2 * Hk) * D, generator=g).to(dtype)
    st = eng._layout(row_group, groups, Lp)
    cos, sin = eng._rope(st["pre_len"] + own_len)
    outs, caches = [], []
    for path in ("kernel", "torch"):
        ko, vo = k_own[0].clone(), v_own[0].clone()
        ctx = dict(st=st, own_len=own_len, cos=cos, sin=sin, B=B)
        if path == "kernel":
            o = eng._attend_kernel(ctx, qkv, k_pre[0], v_pre[0], ko, vo)
        else:
            eng._torch_attention_context(ctx, k_pre[0], ko)
            o = eng._attend_torch(ctx, qkv, k_pre[0], v_pre[0], ko, vo)
        outs.append(o.float())
        caches.append((ko.float(), vo.float()))
    assert outs[0].shape == (B, H * D)
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
    for a, b in zip(caches[0], caches[1]):  # this step's K (after RoPE) and V landed at each row's own position
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    assert not torch.equal(caches[0][0], k_own[0].float())  # ... and something was written


def test_kernel_engine_generates_like_torch_path(model64, tok):
    kernel_or_skip()
    model = model64
    prompts = [PROMPTS[0], PROMPTS[0] + " to sort", PROMPTS[3]]
    kw = dict(max_new_tokens=20, stop=())
    fused = Engine(model, tok, kernel=True, max_batch=4).generate(prompts, Sampling(**kw), n=2)
    plain = Engine(model, tok, kernel=False, max_batch=4).generate(prompts, Sampling(**kw), n=2)
    assert [g.completion_ids for g in fused] == [g.completion_ids for g in plain]
    fused = Engine(model, tok, kernel=True).generate(prompts, Sampling(temperature=0.9, seed=3, **kw), n=2)
    plain = Engine(model, tok, kernel=False).generate(prompts, Sampling(temperature=0.9, seed=3, **kw), n=2)
    assert [g.completion_ids for g in fused] == [g.completion_ids for g in plain]


def test_kernel_norm_and_mlp_ops_match_torch():
    from cocos.generation.backends.engine_ops import load_kernel

    kernel_or_skip()
    K, g = load_kernel(), torch.Generator().manual_seed(1)
    for dt in (torch.float32, torch.bfloat16):
        x, delta = (torch.randn(5, 96, generator=g).to(dt) for _ in range(2))
        w = torch.randn(96, generator=g).to(dt)
        ref_x = x + delta
        xf = ref_x.float()
        ref_h = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt)
        h = K.add_rms_norm_(x, delta, w, 1e-5)
        assert torch.equal(x, ref_x)  # the residual add happened in place
        torch.testing.assert_close(h, ref_h, rtol=1e-2 if dt == torch.bfloat16 else 1e-5, atol=1e-5)
        gu = torch.randn(5, 2 * 48, generator=g).to(dt)
        gate, up = gu.chunk(2, -1)
        torch.testing.assert_close(K.silu_mul(gu), torch.nn.functional.silu(gate) * up,
                                   rtol=1e-2 if dt == torch.bfloat16 else 1e-5, atol=1e-5)


def test_kernel_argmax_is_torch_argmax_with_ties():
    from cocos.generation.backends.engine_ops import load_kernel

    kernel_or_skip()
    g = torch.Generator().manual_seed(2)
    for V in (5, 16, 49152, 1003):
        x = torch.randn(7, V, generator=g)
        x[1, V // 2] = x[1, 0] = x[1].max() + 1  # a tie: the first index wins
        x[2, -1] = 100.0  # the maximum in the scalar tail
        x[3] = 0.0  # all equal
        x = x.bfloat16().float()  # bf16 logits: many near ties
        assert torch.equal(load_kernel().argmax_rows(x), x.argmax(-1)), V


def test_kernel_bf16_engine_sees_weight_updates(tok):
    kernel_or_skip()
    model = make_model(tok, seed=5, hidden=192, heads=3, kv_heads=1)
    eng = Engine(model, tok, dtype="bfloat16")  # kernel and packed weights by default in bf16
    assert eng._kernel is not None
    before = eng.generate(PROMPTS[:3], Sampling(max_new_tokens=12, stop=()))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    after = eng.generate(PROMPTS[:3], Sampling(max_new_tokens=12, stop=()))
    fresh = Engine(model, tok, dtype="bfloat16").generate(PROMPTS[:3], Sampling(max_new_tokens=12, stop=()))
    assert [g.completion_ids for g in after] == [g.completion_ids for g in fresh]
    assert [g.completion_ids for g in after] != [g.completion_ids for g in before]


def test_without_kernel_bf16_falls_back_to_torch_ops(tok, monkeypatch):
    """No compiler (or COCOS_ENGINE_KERNEL=0): bf16 engines run on torch ops; asking for the kernel is an error."""
    from cocos.generation.backends import engine_ops

    model = make_model(tok, seed=6, hidden=192, heads=3, kv_heads=1)
    monkeypatch.setattr(engine_ops, "_KERNEL", {"error": "turned off by COCOS_ENGINE_KERNEL=0"})
    eng = Engine(model, tok, dtype="bfloat16")
    assert eng._kernel is None
    gens = eng.generate(PROMPTS[:2], Sampling(max_new_tokens=8, stop=()))
    assert all(len(g.completion_ids) == 8 for g in gens)
    with pytest.raises(UserError, match="COCOS_ENGINE_KERNEL=0"):
        Engine(model, tok, dtype="bfloat16", kernel=True)
