"""The HF backend: transformers' `generate`, in batches of prompts sorted by length (results in input order).

`n` samples of a prompt are n copies of it in the batches (not `num_return_sequences`): a batch then holds
`batch_size` sequences whatever n is, and the seeded draws are those of the same prompts repeated.
A seed makes samples reproducible for the same prompts and batch size, without touching the caller's global RNG.
"""

from __future__ import annotations

from cocos.generation.backends import Backend
from cocos.generation.device import sdpa_without_cudnn
from cocos.generation.sampling import Generation, Sampling, encode_prompts, eos_ids, repeat_each, trim_completion


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


class HFBackend(Backend):
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts: list[str], sampling: Sampling, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False) -> list[Generation]:
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        max_new_tokens, temperature, top_p, seed, stop = (sampling.max_new_tokens, sampling.temperature,
                                                          sampling.top_p, sampling.seed, sampling.stop)
        model, tok = self.model, self.tokenizer
        eos = eos_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        encoded = repeat_each(encode_prompts(tok, prompts), n)  # one row per sample
        # Longest first: similar lengths share a batch (less padding) and memory peaks show up early.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        sample_kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else {}
        sample_kw.setdefault("do_sample", False)
        # A clean generation config: nothing from the checkpoint's generation_config.json (which may set
        # top_k, repetition penalties, ...) leaks into the sampling the caller asked for.
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens, eos_token_id=eos or None, pad_token_id=pad,
            bos_token_id=tok.bos_token_id, use_cache=True, **sample_kw,
        )  # fmt: skip
        results: list[Generation | None] = [None] * len(encoded)
        was_training, saved_config = model.training, model.generation_config
        device = next(model.parameters()).device
        bar = tqdm(total=len(encoded), desc="generating", unit="seq", disable=not progress)
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
                        results[i] = Generation(text=text, prompt_ids=list(encoded[i]), completion_ids=ids,
                                                finish_reason=reason, logprobs=logprobs[row][: len(ids)])
                    bar.update(len(batch))
            finally:
                model.generation_config = saved_config
                model.train(was_training)
                bar.close()
        return results
