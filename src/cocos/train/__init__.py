"""Kept for one documented command only: `python -m cocos.train.curriculum` (train/curriculum.py forwards it).
The RL trainer is cocos.rl, supervised fine-tuning cocos.finetune."""
