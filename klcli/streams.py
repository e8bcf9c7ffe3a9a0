"""The process's standard streams and signals, as the command line needs them (no heavy imports here).

Exit codes stay 0/1/2/130 whatever happens to the streams: a message to a
closed or broken standard error is dropped, never raised; a closed descriptor
0, 1 or 2 is pointed at /dev/null at start-up, so no file klcli opens can take
its number and nothing meant for one stream lands in another.
"""

from __future__ import annotations

import os
import signal
import sys

# The standard descriptors that were closed when klcli started (``2>&-``, ``>&-``, ``0<&-``).
CLOSED: set[int] = set()


def say(line: str) -> None:
    """One line on standard error; dropped if standard error is closed or its reader has gone."""
    stream = sys.stderr
    if stream is None or 2 in CLOSED:
        return
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):  # BrokenPipeError included: nobody is reading
        silence(2)


def silence(descriptor: int) -> None:
    """Point a broken standard descriptor at /dev/null, so the final flush has nothing to complain of."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, descriptor)
        os.close(null)
    except (OSError, ValueError):
        pass


def reopen_closed_descriptors() -> None:
    """Give closed descriptors 0, 1, 2 to /dev/null and remember which they were."""
    for descriptor, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(descriptor)
            continue
        except OSError:
            pass
        CLOSED.add(descriptor)
        null = os.open(os.devnull, flags)
        if null != descriptor:
            os.dup2(null, descriptor)
            os.close(null)
    if 0 in CLOSED and sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    if 1 in CLOSED and sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if 2 in CLOSED and sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def interrupted_at_once(_number=None, _frame=None) -> None:
    """Ctrl-C where nothing needs cleaning up (start-up, shutdown): the one line, exit 130."""
    say("klcli: interrupted")
    os._exit(130)


class Terminated(BaseException):  # noqa: N818 — a signal, like KeyboardInterrupt
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so temporary files are removed, then the process ends by it."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


def _terminated(number, _frame) -> None:
    raise Terminated(number)


def prepare_process() -> None:
    """Start-up settings of the command line, made first: signals, then the standard descriptors."""
    signal.signal(signal.SIGINT, interrupted_at_once)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _terminated)
    if hasattr(signal, "SIGXFSZ"):  # over ``ulimit -f`` a write fails with EFBIG (an error klcli reports) …
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # … instead of the process being killed
    reopen_closed_descriptors()
    import warnings

    warnings.simplefilter("ignore")  # NumPy's RuntimeWarnings never reach the user; the tests make them errors


def finish(code: int) -> None:
    """Flush the streams and end the process with ``code`` without the interpreter's shutdown.

    pyarrow's C++ reader threads may still be alive when the result is out; a
    normal shutdown can abort on them ("terminate called without an active
    exception", exit 134). Everything klcli writes is flushed here first.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the result is out: a late Ctrl-C changes nothing
    for descriptor, stream in ((1, sys.stdout), (2, sys.stderr)):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            silence(descriptor)
    os._exit(code)


def run() -> None:
    """The console-script entry point: signals first, then the (heavier) command line, then a clean exit."""
    prepare_process()
    code = 2
    try:
        from klcli.boundary import main

        code = main()
    except KeyboardInterrupt:
        say("klcli: interrupted")
        code = 130
    except Terminated as signalled:
        code = 128 + signalled.number
    finish(code)
