"""Training: the CoCoS RL trainer (rloo objective, trainer loop, config) and SFT.

Import the submodules directly (`cocos.train.trainer`, `cocos.train.rloo`, `cocos.train.config`);
this package does not import torch on its own.
"""
