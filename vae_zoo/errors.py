"""Errors that mean "the user asked for something we cannot do" (exit status 2, no traceback)."""

from __future__ import annotations

import errno
from pathlib import Path


class UserError(Exception):
    """Bad input: a wrong key in a suite file, a missing dataset, an unknown model.

    The message says what is wrong and how to fix it; the CLI prints it alone and exits with 2.
    """


class StorageError(UserError):
    """Results cannot be written where they must go: a read-only or full disk, a file where a
    folder is needed."""


# What to do about a storage error, by its errno.
STORAGE_FIXES = {
    errno.ENOSPC: "free some space there, or choose another --results-dir",
    errno.EDQUOT: "free some space there (the disk quota is used up), or choose another "
                  "--results-dir",
    errno.EROFS: "the file system is read-only: choose another --results-dir",
    errno.EACCES: "make it writable for this user, or choose another --results-dir",
    errno.EPERM: "make it writable for this user, or choose another --results-dir",
    errno.ENOTDIR: "a file stands where a folder is needed: move it, or choose another "
                   "--results-dir",
    errno.EEXIST: "a file stands where a folder is needed: move it, or choose another "
                  "--results-dir",
}


def storage_error(path: Path | str, error: OSError, doing: str = "write to") -> StorageError:
    """A `StorageError` naming the path, the problem and the fix for an OSError."""
    where = error.filename or path
    fix = STORAGE_FIXES.get(error.errno, "check the path and its file system")
    return StorageError(f"cannot {doing} {where}: {error.strerror or error} ({fix})")
