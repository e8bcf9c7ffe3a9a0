"""The errors klcli reports to its users.

Each error is raised where the problem is found, with a message that names the
file, row or option and says how to fix it. Only the CLI layer turns them into
a ``klcli: error: …`` line and an exit code.
"""

from __future__ import annotations


def shown(text: str) -> str:
    """Untrusted text (a path, a member, tensor or column name) made safe to print on a terminal.

    Every character that is not printable — newlines, ESC and the other control
    characters, Unicode line separators, undecodable bytes — is written as its
    Python escape, so a crafted name can neither forge a ``klcli:`` line nor
    send a terminal escape; printable text (accents, CJK) is kept as it is.

    Examples
    --------
    >>> shown("a.npz:x")
    'a.npz:x'
    >>> print(shown("x\\n klcli: error: forged\\x1b]0;title\\x07"))
    x\\n klcli: error: forged\\x1b]0;title\\x07
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class KlcliError(Exception):
    """A problem the user can fix; reported as one ``klcli: error:`` line.

    The message is passed through :func:`shown`: whatever file-derived name it
    quotes, it stays one line with no terminal escapes.
    """

    exit_code = 2

    def __init__(self, message: str = "", *args):
        super().__init__(shown(str(message)), *args)


class UsageError(KlcliError):
    """An option, or a combination of options, that klcli cannot honour."""


class InputError(KlcliError):
    """A file or operand that is missing, unreadable or not valid input."""


class ShapeError(InputError):
    """Two inputs whose shapes cannot be paired row by row."""


class RowCountError(ShapeError):
    """Two inputs paired row by row that hold different numbers of rows."""


class DistributionError(InputError):
    """A row that is not a valid distribution of the declared kind."""


class CheckError(UsageError):
    """A ``--check`` expression that cannot be parsed or names no figure."""
