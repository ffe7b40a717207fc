"""cocos.generation.policy on tiny Llama models built from a config, with a BPE tokenizer trained here (no
downloads)."""

from __future__ import annotations

import pytest
import torch

from cocos.errors import UserError
from cocos.generation.policy import Policy, load_policy
from cocos.generation.sampling import Generation, Sampling, trim_completion

CORPUS = [
    "def add(a, b):\n    return a + b\n[DONE]",
    "You are an expert Python programmer, and here is your task: Write a function. [BEGIN]\n",
    "def is_even(n):\n    return n % 2 == 0\n[DONE]\n\nThere might be an error in the code above. [CORRECT]\n",
    "assert add(1, 2) == 3\nassert is_even(4)\nprint('hello world')\n",
]
PROMPTS = [
    "def add(a, b):",
    "You are an expert Python programmer, and here is your task: Write a function that adds. [BEGIN]\n",
    "assert",
    "def is_even(n):\n    return n % 2",
    "print('hello",
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(tokenizer, seed=0, hidden=64, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init: fewer near-ties, varied greedy text
        model.lm_head.weight.mul_(20)
    return model


@pytest.fixture(scope="module")
def policy(tokenizer):
    return Policy(tiny_llama(tokenizer), tokenizer, backend="hf")


def chain_policy(tokenizer, chain: list[int]) -> Policy:
    """A model that emits `chain` token by token: layers add nothing to the residual stream, so each
    position's logits depend on its own token only, and the output head maps token chain[i] to chain[i+1]."""
    assert len(set(chain[:-1])) == len(chain) - 1, "the chain needs a unique successor per token"
    vocab = len(tokenizer)
    model = tiny_llama(tokenizer, hidden=320, layers=1)
    assert vocab <= 320
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, 320))
        head = torch.zeros(vocab, 320)
        for a, b in zip(chain, chain[1:]):
            head[b, a] = 10.0
        model.lm_head.weight.copy_(head)
    return Policy(model, tokenizer, backend="hf")


def test_batched_generation_returns_input_order_and_matches_unbatched_greedy(policy):
    batched = policy.generate(PROMPTS, Sampling(max_new_tokens=8, stop=()), batch_size=2)
    assert [g.prompt_ids for g in batched] == [policy.tokenizer(p).input_ids for p in PROMPTS]
    alone = [policy.generate([p], Sampling(max_new_tokens=8, stop=()))[0] for p in PROMPTS]
    assert [g.completion_ids for g in batched] == [g.completion_ids for g in alone]
    assert [g.text for g in batched] == [g.text for g in alone]
    for g in batched:
        assert isinstance(g, Generation)
        assert g.finish_reason in ("length", "eos")
        assert 1 <= len(g.completion_ids) <= 8
        assert policy.tokenizer.pad_token_id not in g.completion_ids[:-1]
    assert len({tuple(g.completion_ids) for g in batched}) > 1  # the prompts lead to different text


def test_greedy_is_deterministic_and_equals_argmax_decoding(policy):
    a = policy.generate(PROMPTS, Sampling(max_new_tokens=6, stop=()))
    b = policy.generate(PROMPTS[::-1], Sampling(max_new_tokens=6, stop=()), batch_size=3)[::-1]
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    # Reference: plain argmax decoding with full forward passes, no cache, no padding.
    ids = list(a[1].prompt_ids)
    with torch.no_grad():
        for _ in range(len(a[1].completion_ids)):
            ids.append(int(policy.model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[len(a[1].prompt_ids) :] == a[1].completion_ids


def test_seed_reproduces_samples_and_different_seeds_differ(policy):
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.95, stop=())
    prompts = PROMPTS[:3] * 2
    s1 = policy.generate(prompts, Sampling(seed=123, **kw))
    s2 = policy.generate(prompts, Sampling(seed=123, **kw))
    s3 = policy.generate(prompts, Sampling(seed=7, **kw))
    assert [g.completion_ids for g in s1] == [g.completion_ids for g in s2]
    assert [g.completion_ids for g in s1] != [g.completion_ids for g in s3]
    greedy = policy.generate(prompts, Sampling(max_new_tokens=10, stop=()))
    assert [g.completion_ids for g in s1] != [g.completion_ids for g in greedy]
    # The seed is used on a forked RNG: the caller's global stream is untouched.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    policy.generate(prompts[:1], Sampling(seed=1, **kw))
    assert torch.equal(torch.rand(3), expected)


def test_generation_stops_at_stop_string_and_trims(tokenizer):
    prompt = "You are an expert Python programmer, and here is your task: Write a function. Answer:"
    target = "def add(x):\n    return 7\n[DONE]pr"  # tokens all distinct, so a chain can spell it
    p_ids, t_ids = tokenizer(prompt).input_ids, tokenizer(target).input_ids
    policy = chain_policy(tokenizer, [p_ids[-1], *t_ids])
    steps = []
    hook = policy.model.register_forward_hook(lambda *a: steps.append(1))
    g = policy.generate([prompt], Sampling(max_new_tokens=40))[0]
    hook.remove()
    assert len(steps) == len(g.completion_ids)  # generation itself halted at the stop string
    assert g.finish_reason == "stop"
    assert g.text == "def add(x):\n    return 7\n[DONE]"
    assert tokenizer.decode(g.completion_ids).startswith(g.text)
    assert g.completion_ids == t_ids[: len(g.completion_ids)]
    assert "[DONE]" not in tokenizer.decode(g.completion_ids[:-1])  # nothing sampled after the stop token
    # Without the stop string the model runs on through the text and stops at the token budget.
    g2 = policy.generate([prompt], Sampling(max_new_tokens=len(t_ids), stop=()))[0]
    assert g2.text == target and g2.completion_ids == t_ids and g2.finish_reason == "length"
    # A batch where one row stops early: the other row is not cut, and padding never leaks in.
    both = policy.generate([prompt, "assert"], Sampling(max_new_tokens=len(t_ids) + 2), batch_size=2)
    assert both[0].text == g.text and both[0].completion_ids == g.completion_ids


def test_eos_ends_a_generation(tokenizer):
    prompt = "assert"
    body = tokenizer(" add(1, 2) == 3\n").input_ids
    policy = chain_policy(tokenizer, [tokenizer(prompt).input_ids[-1], *body, tokenizer.eos_token_id])
    g = policy.generate([prompt], Sampling(max_new_tokens=30))[0]
    assert g.finish_reason == "eos"
    assert g.completion_ids == body + [tokenizer.eos_token_id]
    assert g.text == " add(1, 2) == 3\n"


def test_trim_completion_on_token_ids(tokenizer):
    ids = tokenizer("return x\n[DONE]\nmore [DONE] text").input_ids
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    text, kept, reason = trim_completion(tokenizer, ids + [pad, pad], ("[DONE]",), [eos])
    assert (text, reason) == ("return x\n[DONE]", "stop")
    assert tokenizer.decode(kept).startswith(text) and "[DONE]" not in tokenizer.decode(kept[:-1])
    # The earliest of several stop strings wins; EOS before any stop string ends it.
    assert trim_completion(tokenizer, ids, ("text", "\n[DONE]"), [eos])[0] == "return x\n[DONE]"
    text, kept, reason = trim_completion(tokenizer, ids[:2] + [eos, pad] + ids[2:], ("[DONE]",), [eos])
    assert (kept, reason) == (ids[:2] + [eos], "eos") and text == tokenizer.decode(ids[:2])
    assert trim_completion(tokenizer, ids, (), [eos]) == (tokenizer.decode(ids), ids, "length")


def test_generate_restores_training_mode_and_uses_live_weights(tokenizer):
    policy = Policy(tiny_llama(tokenizer, seed=1), tokenizer, backend="hf")
    policy.model.train()
    before = policy.generate(PROMPTS[:2], Sampling(max_new_tokens=5, stop=()))
    assert policy.model.training
    with torch.no_grad():  # what an optimiser step does: change the live weights in place
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = policy.generate(PROMPTS[:2], Sampling(max_new_tokens=5, stop=()))
    assert [g.completion_ids for g in before] != [g.completion_ids for g in after]
    policy.model.eval()
    policy.generate(PROMPTS[:1], Sampling(max_new_tokens=2))
    assert not policy.model.training


def test_local_checkpoint_loads(tmp_path, policy):
    policy.model.save_pretrained(tmp_path)
    policy.tokenizer.save_pretrained(tmp_path)
    loaded = load_policy(str(tmp_path), dtype="float32", backend="hf", verbose=False)
    assert loaded.backend == "hf" and "local checkpoint" in loaded.describe()
    assert [g.completion_ids for g in loaded.generate(PROMPTS, Sampling(max_new_tokens=6, stop=()))] == [
        g.completion_ids for g in policy.generate(PROMPTS, Sampling(max_new_tokens=6, stop=()))
    ]
    bf16 = load_policy(str(tmp_path), dtype="bfloat16", backend="hf", verbose=False)
    assert bf16.dtype == torch.bfloat16
    assert len(bf16.generate(PROMPTS[:1], Sampling(max_new_tokens=3))[0].completion_ids) >= 1


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"'no-such-model'.*smollm2-135m.*gemma3-270m"):
        load_policy("no-such-model", verbose=False)
    with pytest.raises(UserError, match="config.json"):
        load_policy(str(tmp_path), verbose=False)
    with pytest.raises(UserError, match="dtype"):
        load_policy(str(tmp_path), dtype="float64", verbose=False)
    with pytest.raises(UserError, match="backend"):
        load_policy(str(tmp_path), backend="tpu", verbose=False)


def test_bad_generate_arguments(policy):
    with pytest.raises(UserError, match="empty prompt"):
        policy.generate(["def f():", ""], Sampling(max_new_tokens=2))
    with pytest.raises(UserError, match="list of strings"):
        policy.generate("def f():", Sampling(max_new_tokens=2))
    with pytest.raises(UserError, match="top_p"):
        policy.generate(["def f():"], Sampling(temperature=1.0, top_p=0.0))


def test_sampling_checks_itself_and_keywords_are_a_convenience(policy):
    with pytest.raises(UserError, match="temperature"):
        Sampling(temperature=-0.5)
    with pytest.raises(UserError, match="top_p"):
        Sampling(top_p=1.5)
    with pytest.raises(UserError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    assert Sampling(stop=["", "[DONE]"]).stop == ("[DONE]",)
    record = policy.generate(PROMPTS[:2], Sampling(max_new_tokens=5, stop=()))
    keywords = policy.generate(PROMPTS[:2], max_new_tokens=5, stop=())  # the same record, made by generate
    assert [g.completion_ids for g in keywords] == [g.completion_ids for g in record]
    with pytest.raises(UserError, match="not both"):
        policy.generate(PROMPTS[:1], Sampling(), max_new_tokens=5)
    with pytest.raises(UserError, match="n=0"):
        policy.generate(PROMPTS[:1], Sampling(), n=0)


@pytest.mark.parametrize("backend", ["hf", "engine"])
def test_n_samples_equal_n_copies_of_each_prompt(policy, backend):
    """n samples per prompt: the Generations (ids, log-probs), in the order, that n copies of each prompt give."""
    p = Policy(policy.model, policy.tokenizer, backend=backend)
    assert p.backend == backend
    s = Sampling(max_new_tokens=8, temperature=1.0, seed=3, stop=())
    got = p.generate(PROMPTS[:3], s, n=3)
    copies = p.generate([x for x in PROMPTS[:3] for _ in range(3)], s)
    assert [(g.prompt_ids, g.completion_ids, g.logprobs) for g in got] == \
        [(g.prompt_ids, g.completion_ids, g.logprobs) for g in copies]
    assert [g.prompt_ids for g in got[:3]] == [policy.tokenizer(PROMPTS[0]).input_ids] * 3
    assert len({tuple(g.completion_ids) for g in got[:3]}) > 1  # the n samples of a prompt are different draws


def test_auto_backend_uses_engine_only_when_it_supports_the_model(monkeypatch, policy):
    calls = []

    class FakeEngine:  # a stand-in for the rollout engine, to test the selection logic only
        def __init__(self, model, tokenizer, dtype=None):
            self.model = model

        def generate(self, prompts, sampling, n=1, *, batch_size, progress):
            calls.append((prompts, sampling.max_new_tokens, sampling.stop, progress))
            return [Generation(text="x") for _ in prompts]

    monkeypatch.setattr("cocos.generation.backends.engine.Engine", FakeEngine)
    monkeypatch.setattr("cocos.generation.backends.engine.supports", lambda model: False)
    assert Policy(policy.model, policy.tokenizer, backend="auto").backend == "hf"
    with pytest.raises(UserError, match="engine"):
        Policy(policy.model, policy.tokenizer, backend="engine")
    monkeypatch.setattr("cocos.generation.backends.engine.supports", lambda model: True)
    p = Policy(policy.model, policy.tokenizer, backend="auto")
    assert p.backend == "engine"
    assert p.generate(["a", "b"], Sampling(max_new_tokens=3), progress=True)[1].text == "x"
    assert calls == [(["a", "b"], 3, ("[DONE]",), True)]
    assert Policy(policy.model, policy.tokenizer, backend="hf").backend == "hf"
