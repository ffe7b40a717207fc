"""Online RL: the objective (`objective`: CoCoS, SCoRe and the ablations as `Method` records), the log-prob passes
(`passes`), the trainer loop (`trainer`, with `checkpoint`, `curriculum` and `monitor`: statistics and watchdog),
and its config (`config`: TrainConfig).

Import the submodules directly (`cocos.rl.trainer`, `cocos.rl.objective`, `cocos.rl.config`).
"""
