"""Online RL: the objective (`objective`: CoCoS, SCoRe and the ablations as `Method` records), the trainer loop
(`trainer`) and its parts: the models (`models`: policy, reference, LoRA), the processes (`distributed`: accelerate,
DeepSpeed), what a step carries (`batch`), the log-prob passes (`passes`), `checkpoint`, `curriculum` and `monitor`
(statistics and watchdog); its config (`config`: TrainConfig).

Import the submodules directly (`cocos.rl.trainer`, `cocos.rl.objective`, `cocos.rl.config`).
"""
