"""The package's own errors: faults a person can fix (a flag, a value, a file), each with a message that
says what is wrong in our words. The CLI prints one of these as one line and exits 2; any other
exception is a bug of ours, and it says so (cli/__init__.py).

They also derive from the built-in class a caller would catch (ValueError, FileNotFoundError), so code
written against the built-ins keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names it and, where there is one, the fix."""


class InvalidValue(UserError, ValueError):
    """A value, file content or combination of settings we cannot use."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named is not there."""


class PathTaken(UserError, FileExistsError):
    """Something is already where we were asked to write, and we will not overwrite it."""


class NotAFile(UserError, IsADirectoryError):
    """A folder was named where a file belongs."""
