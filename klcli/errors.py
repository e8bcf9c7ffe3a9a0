"""The errors klcli reports to its users.

Each error is raised where the problem is found, with a message that names the
file, row or option and says how to fix it. Only the CLI layer turns them into
a ``klcli: error: …`` line and an exit code.
"""

from __future__ import annotations


class KlcliError(Exception):
    """A problem the user can fix; reported as one ``klcli: error:`` line."""

    exit_code = 2


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


class OutputError(KlcliError):
    """A result that cannot be written where ``-o`` says (a full disk, a read-only folder, a bad name)."""
