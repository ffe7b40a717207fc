"""CoCoS: multi-turn self-correction for small code language models, trained with online RL."""

__version__ = "0.1.0"
