"""Self-Corrector (Welleck et al. 2023): a corrector model, separate from the generator, corrects its answers.
The method whole, in one folder: its actor and data builders (`actor`), and its training (`train`,
`cocos self-corrector`)."""
