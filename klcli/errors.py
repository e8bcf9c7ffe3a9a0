"""The errors klcli reports to its users.

Each error is raised where the problem is found, with a message that states
the fact (the file, row or option, and what is wrong with it). Advice that
names the command line's flags ("pass --normalize") is kept apart, in
``hint``, which only the CLI prints; ``api_hint`` gives the same advice in the
Python API's words (``normalize=True``) and is part of ``str(error)``. Only the
CLI layer turns errors into a ``klcli: error: …`` line and an exit code.

For Python callers the errors are the built-in exceptions NumPy and SciPy
raise: input and usage errors are ``ValueError`` subclasses, an argument of
the wrong type a ``TypeError``.

Examples
--------
>>> error = DistributionError("P: row 3 sums to 1.2, not 1", hint="pass --normalize",
...                           api_hint="pass normalize=True")
>>> isinstance(error, ValueError), str(error)
(True, 'P: row 3 sums to 1.2, not 1; pass normalize=True')
>>> error.cli_message()
'P: row 3 sums to 1.2, not 1; pass --normalize'
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """klcli's exit statuses (SPEC §5)."""

    OK = 0  # computed, and every --check passed
    CHECK_FAILED = 1  # a --check failed
    ERROR = 2  # a usage or input error
    INTERRUPTED = 130  # Ctrl-C, SIGTERM



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

    ``form`` says how the CLI joins the fact and its hint (``"{message}; {hint}"``
    by default, or ``"{message} ({hint})"``). The message is passed through
    :func:`shown`: whatever file-derived name it quotes, it stays one line with
    no terminal escapes.
    """

    exit_code = ExitStatus.ERROR

    def __init__(self, message: str = "", *, hint: str | None = None, api_hint: str | None = None,
                 form: str = "{message}; {hint}"):
        message = shown(str(message))
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.api_hint = api_hint
        self.form = form

    def __str__(self) -> str:
        if self.api_hint:
            return self.form.format(message=self.message, hint=self.api_hint)
        return self.message

    def cli_message(self) -> str:
        """The text the CLI prints: the fact and the advice in terms of its flags."""
        if self.hint:
            return self.form.format(message=self.message, hint=self.hint)
        return self.message


class UsageError(KlcliError, ValueError):
    """An option, or a combination of options, that klcli cannot honour."""


class ArgumentTypeError(KlcliError, TypeError):
    """An argument of the wrong type (from Python: a string where an array is expected)."""


class InputError(KlcliError, ValueError):
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


# Notes said on standard error as well as reported, whatever the output (-q, --check, JSON): input that is valid but
# almost certainly not what was meant, which a CI gate would otherwise pass in silence.
AS_ASKED = "read as logits, as asked"
# And figures that are only lower bounds of what a gate means (a top-K reference's divergences): a --check on
# them would pass where the full-vocabulary figure fails.
LOWER_BOUNDS = "figures are lower bounds"


def is_loud(note: str) -> bool:
    """Whether a result's note is one that standard error must carry too (see :data:`AS_ASKED`)."""
    return note.endswith(AS_ASKED) or note.startswith(LOWER_BOUNDS)
