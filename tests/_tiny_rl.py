"""A tiny RL setting for trainer tests (no downloads): a byte-level BPE tokenizer built here, plus whole
code snippets as single tokens, and a tiny Llama from a config. Sampling at temperature 1 then writes
right, half-right and wrong `add` functions often enough that rewards differ within a group."""

from __future__ import annotations

from pathlib import Path

SNIPPETS = [
    "def add(a, b):\n    return a + b\n",  # passes 3/3
    "def add(a, b):\n    return a - b\n",  # passes 1/3 (add(0, 0))
    "def add(a, b):\n    return b\n",  # passes 2/3 (add(0, 5), add(0, 0))
    "# thinking\n",
    "\n",
    "[DONE]",
]
TESTS = ["assert add(1, 2) == 3", "assert add(0, 5) == 5", "assert add(0, 0) == 0"]
CORPUS = [
    "You are an expert Python programmer, and here is your task: Write a function to add two numbers. "
    "Your code should pass these tests:\n\n" + "\n".join(TESTS) + "\n\n[BEGIN]\n",
    "There might be an error in the code above because of lack of understanding of the question. Please correct "
    "the error, if any, and rewrite the solution. Only output the final correct Python program!\n\n[CORRECT]\n",
]


def tiny_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in SNIPPETS])
    return tok


def tiny_model(tokenizer, seed=0, snippet_bias=True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if not snippet_bias:  # random weights: many-token, high-entropy completions
        return model
    with torch.no_grad():
        # A large constant in residual dimension 0 makes the normed final hidden state ~sqrt(d) there, so
        # lm_head column 0 acts as a bias: the snippet tokens get most of the probability mass.
        model.model.embed_tokens.weight[:, 0] = 20.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(SNIPPETS), 0] = 1.0
    return model


def save_tiny_model(path: Path, seed=0) -> Path:
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def add_problems(n=2):
    from cocos.data.problems import Problem

    return [Problem(task_id=900 + i, text="Write a function to add two numbers.", tests=list(TESTS), dataset="tiny")
            for i in range(n)]


def perturbed_trainer(out: Path, **cfg):
    """A Trainer on the tiny model whose logits depend on the context (no snippet bias, so a wrong position, mask or
    advantage on a sequence shows in the gradient), moved a little away from its reference so that every sequence has
    a KL. cfg: TrainConfig fields over a 2-problem, k = 3, 8-token step."""
    import torch

    from cocos.generation.policy import Policy
    from cocos.rl.config import TrainConfig
    from cocos.rl.trainer import Trainer

    tok = tiny_tokenizer()
    cfg = TrainConfig(**{**dict(model="tiny", k=3, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0,
                                micro_batch=2, max_steps=1, eval_limit=0, autocast="none", tensorboard=False,
                                timeout=5.0, beta=0.05), **cfg})
    policy = Policy(tiny_model(tok, snippet_bias=False), tok, backend="auto")
    tr = Trainer(cfg, out, progress=False, policy=policy, problems=add_problems(2))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return tr
