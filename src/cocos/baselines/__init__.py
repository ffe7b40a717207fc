"""Baselines that change who writes a turn or how: Self-Refine (`self_refine`), Self-Corrector (`self_corrector`:
generator + corrector) and ReVISE (`revise`: [REFINE] token). Each is an actor (a factory of objects with
`write(problems, histories, sampling) -> list[Draft]`, named in cocos.episodes.actors.ACTORS) and, where it trains,
its data builder and training.

Adding a baseline: one module in this folder, one entry in cocos.episodes.actors.ACTORS, one config (configs/).
"""
