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


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error a user's environment causes: the path and why, in words."""
    import errno

    why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.EPERM: "not permitted",
           errno.ENOTDIR: "a part of the path is a file, not a folder", errno.ENOENT: "no such file or folder",
           errno.EEXIST: "it already exists", errno.EISDIR: "it is a folder",
           errno.EDQUOT: "the disk quota is exceeded"}.get(e.errno, e.strerror or type(e).__name__)
    where = e.filename if e.filename is not None else "(no path)"
    return f"{where}: {why}"


def one_line_errors(prog: str):
    """Decorate a command's `main`: an OSError (a full or read-only disk, a path under a file, a permission)
    becomes one line `prog: <path>: <why>` on stderr and exit 2 instead of a traceback; anything else keeps its
    traceback (a bug)."""
    import functools
    import sys

    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except OSError as e:
                print(f"{prog}: {os_error_line(e)}", file=sys.stderr)
                return 2
        return run
    return wrap
