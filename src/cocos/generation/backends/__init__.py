"""Generation backends behind `cocos.generation.policy.Policy`: HF generate (`hf`), the CPU rollout engine
(`engine`), vLLM (`vllm`). Each is built from the model and its tokenizer and implements `Backend`."""

from __future__ import annotations

from cocos.generation.sampling import Generation, Sampling


class Backend:
    """The interface the policy drives."""

    def generate(self, prompts: list[str], sampling: Sampling, n: int = 1, *, batch_size: int = 16,
                 progress: bool = False) -> list[Generation]:
        """`n` samples of each prompt: len(prompts) * n Generations, the n of a prompt together, in input order (see
        cocos.generation.sampling for what their fields hold). `sampling` checked itself when it was made; the
        policy checks the rest (prompts a list, n and batch_size >= 1)."""
        raise NotImplementedError

    def sync_weights(self) -> None:
        """Push the live weights into a backend that keeps its own copy (vLLM); a no-op for the others."""

    def close(self) -> None:
        """Release what the backend holds outside this process (vLLM's engine processes); a no-op for the others."""
