"""Episodes: multi-turn self-correction played out (`rollout`), their records (`records`: RolloutSettings, Turn,
Trajectory, Draft), who writes each turn (`actors`: PolicyActor and the registry of actors by name), and the rewards
(`rewards`). Computes no loss and imports no trainer, fine-tuning or evaluation code.
"""
