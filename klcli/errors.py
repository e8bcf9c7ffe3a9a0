"""The errors klcli reports to its users.

Each error is raised where the problem is found, with a message that names the
file, row or option and says how to fix it. Only the CLI layer turns them into
a ``klcli: error: …`` line and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """klcli's exit statuses (SPEC §5)."""

    OK = 0  # computed, and every --check passed
    CHECK_FAILED = 1  # a --check failed
    ERROR = 2  # a usage or input error
    INTERRUPTED = 130  # Ctrl-C, SIGTERM



class KlcliError(Exception):
    """A problem the user can fix; reported as one ``klcli: error:`` line."""

    exit_code = ExitStatus.ERROR


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
