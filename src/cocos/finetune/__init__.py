"""Supervised fine-tuning with TRL: the settings every fit shares (`config`: FinetuneSettings, SFTRunConfig, the TRL
trainer's arguments), `cocos sft` (`sft`: the boost model and Turn-SFT; its examples `sft_data`, with `mutants`), and
what the trained baselines share (`baseline_train`: their config fields, own-answer sampling, run folder)."""
