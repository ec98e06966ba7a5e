"""The one error family. A user error (bad input, a bad setting, a file that cannot be used) is a
:class:`ThereminError` whose message names the file or setting and the reason; anything else is a bug and keeps its
traceback. :func:`user_error` tells the two apart (the OS errors that are the user's situation included)."""

from __future__ import annotations

import errno

from omegaconf.errors import MissingMandatoryValue

# OS errors that are the user's situation, not a bug: say what happened to which file
_USER_OS_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or directory",
                   errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "not a folder"}

class ThereminError(ValueError):
    """Bad input or a bad setting. The message names the file or setting and the reason; console scripts
    print it without a traceback. Every error theremin raises for its user derives from this class."""

def user_error(err: BaseException) -> ThereminError | None:
    """The user-facing form of ``err``, or None when it is a bug (which keeps its traceback)."""

    if isinstance(err, ThereminError):
        return err
    # hydra.utils.instantiate wraps what a constructor raised (InstantiationException): answer the cause
    cause = err.__cause__ or err.__context__
    if cause is not None and cause is not err and type(err).__name__ == "InstantiationException":
        return user_error(cause)
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or str(err).split(":", 1)[-1].strip().splitlines()[0]
        return ThereminError(f"{key} is required: set it on the command line, e.g. {key}=...")
    if isinstance(err, OSError) and err.errno in _USER_OS_ERRORS:
        where = f"{err.filename}: " if err.filename else ""
        return ThereminError(f"{where}{_USER_OS_ERRORS[err.errno]}")
    return None
