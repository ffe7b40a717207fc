"""Generation: the `Generation` record and `Sampling` settings every backend follows (`sampling`), the named models
(`models`), loading a model behind one backend interface (`policy`, `backends/`: HF generate, the CPU rollout engine,
vLLM), and the hardware facts they read (`device`). Knows nothing of rewards or training."""
