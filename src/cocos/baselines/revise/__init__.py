"""ReVISE (Lee et al. 2025): one model verifies its own answer and refines it after a [REFINE] token.
The method whole, in one folder: its actor and data builders (`actor`), and its training (`train`,
`cocos revise`)."""
