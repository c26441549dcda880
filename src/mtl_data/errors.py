"""User-facing errors.

Every error a user can cause by pointing the tool at bad data or passing a bad option is a
`MtlDataError`. The CLI prints it as one line on stderr and exits non-zero, never with a
traceback; anything else escaping is a bug in this project.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def printable(text: str | Path) -> str:
    """``text`` with what is not valid UTF-8 escaped (``000002\\xe9.png``), so it can be printed
    and written to JSON, Parquet and logs.

    A file name that is not valid UTF-8 reaches Python as a string with lone surrogates (PEP 383):
    opening the file works, but encoding the name for a terminal or a file does not.
    """
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file-system byte stands for (a JSON "\\ud800" escape)
        return str(text).encode("utf-8", "backslashreplace").decode()


class MtlDataError(Exception):
    """A problem the user can fix: bad input data, a bad option, an existing output."""

    def __str__(self) -> str:
        return printable(super().__str__())


class LayoutError(MtlDataError):
    """A raw dataset root does not have the folders its converter expects."""


class InputError(MtlDataError):
    """One input file is malformed; under ``--on-error skip`` the frame is rejected.

    Args:
        path: the offending file.
        message: what was wrong and, where useful, what was expected.
        line: 1-based line number inside ``path`` when the problem is on one line.
        hint: what the user can do about it.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None, hint: str | None = None):
        self.path = printable(path)  # also what rejects.jsonl records
        self.message = printable(message)
        self.line = line
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def __reduce__(self):  # keep the fields when a worker process sends the error back
        return (type(self), (self.path, self.message, self.line, self.hint))


class OutputError(MtlDataError):
    """An output cannot be written (a full disk, a read-only folder, ...).

    Its line names the path, the operating system's reason with its errno, and what to do.

    Args:
        path: the file or folder being written (the error's own ``filename`` wins when it has one).
        error: the ``OSError`` the operating system gave.
        option: the command-line option that chose the place (``--to``), named in the advice;
            the CLI sets it when the library raised the error.
    """

    def __init__(self, path: str | Path, error: OSError, option: str | None = None):
        self.path = str(error.filename if isinstance(error.filename, (str, Path)) else path)
        self.error = error
        self.option = option
        super().__init__(self.path, error)

    def __str__(self) -> str:
        code = self.error.errno
        reason = self.error.strerror or str(self.error)
        fix = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (disk quota exceeded)"}.get(
            code, "make it writable" if code in (errno.EACCES, errno.EPERM, errno.EROFS) else "check the disk"
        )
        where = f" or choose another {self.option}" if self.option else ""
        number = f" (errno {code})" if code is not None else ""
        return f"cannot write {self.path}: {reason}{number}; {fix}{where}"
