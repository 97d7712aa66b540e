"""Errors a user can cause. Each carries one line naming the bad file, tensor, argument or frame.

Commands catch `TPOError`, print its message on one line and exit non-zero; anything else is a bug
and keeps its traceback. This module imports nothing heavy so the runtime can use it.
"""


class TPOError(Exception):
    """Base of all user-facing errors: the message is the whole story, on one line."""


class ConfigError(TPOError):
    """Unknown configuration name, unknown key or wrong type in a configuration."""


class CheckpointError(TPOError):
    """A checkpoint file is missing, truncated, pickled, or holds wrong/missing tensors."""


class InputError(TPOError):
    """A video, frame, question or box given by the user cannot be used."""
