"""Training: the RL objective (`objective`: CoCoS, SCoRe and the ablations as `Method` records), the RL trainer
loop (`trainer`), its config (`config`), and supervised fine-tuning (`sft`: the boost model, Turn-SFT).

Import the submodules directly (`cocos.train.trainer`, `cocos.train.objective`, `cocos.train.config`).
"""
