"""The one exception type for user mistakes (bad config, missing dataset, bad input)."""


class UserError(ValueError):
    """A mistake the user can fix: the CLI prints its message as one line, without a traceback.

    The message names the field or input at fault and says how to fix it.
    """
