"""The process boundary: tuning the process, running the Typer app, and the one place errors become exit codes.

``main`` turns every error into one ``klcli: error: …`` line and an
:class:`~klcli.errors.ExitStatus`; a traceback is shown only with
``KLCLI_DEBUG=1``. ``run`` is the console-script entry point.
"""

from __future__ import annotations

import os
import sys

from klcli.errors import ExitStatus, KlcliError


def _error(message: str) -> None:
    from klcli.streams import say

    lines = str(message).strip().splitlines() or ["unknown error"]
    say(f"klcli: error: {lines[0]}")
    if len(lines) > 1:
        say(f"klcli: {' '.join(line.strip() for line in lines[1:])}")


def _os_error(exc: OSError) -> tuple[str, int]:
    """An operating-system error that reached the boundary: what the user can do about it, and the exit code."""
    import errno

    if exc.errno == errno.ENOMEM:  # a memory map or allocation refused (ulimit -v)
        return "out of memory; the input is too large for this machine's memory (or its ulimit -v)", ExitStatus.ERROR
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    return f"{where}{reason[:1].lower() + reason[1:]}", ExitStatus.ERROR


def tune_process() -> None:
    """Settings for block-wise NumPy work, made before NumPy is imported.

    klcli runs its own threads over blocks of rows; BLAS threads on top of them
    only spin and steal the cores (``np.vecdot`` calls BLAS), so BLAS gets one
    thread unless the user chose otherwise. And glibc hands each multi-MiB
    temporary back to the kernel when freed, so every block would page-fault
    its buffers in anew; keeping them in the heap (mallopt) avoids that.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap
            libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MiB of freed heap
        except (OSError, AttributeError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run klcli; return the exit status (SPEC §5). Tracebacks only with ``KLCLI_DEBUG=1``."""
    import signal

    from klcli.streams import say

    tune_process()
    try:
        import typer

        from klcli.cli import app
    except KeyboardInterrupt:  # Ctrl-C while starting up
        say("klcli: interrupted")
        return ExitStatus.INTERRUPTED
    debug = os.environ.get("KLCLI_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:  # from here Ctrl-C unwinds (finally blocks run, -o's temporary file goes) and ends as exit 130
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        code = command.main(args=argv, prog_name="klcli", standalone_mode=False)
        if code == ExitStatus.INTERRUPTED:  # Typer turns Ctrl-C into a silent exit 130
            say("klcli: interrupted")
        return code if isinstance(code, int) else ExitStatus.OK
    except typer.Exit as done:
        return done.exit_code
    except KlcliError as exc:
        if debug:
            raise
        _error(exc.cli_message())
        return exc.exit_code
    except _typer_error() as exc:  # Typer's own usage errors: bad option, missing argument
        if debug:
            raise
        format_message = getattr(exc, "format_message", None)
        message = (format_message() if format_message else str(exc)).rstrip(".")
        if message:  # (no command at all has already printed the help)
            _error(f"{message} (see klcli --help)")
        return getattr(exc, "exit_code", ExitStatus.ERROR) or ExitStatus.ERROR
    except (KeyboardInterrupt, typer.Abort):
        say("klcli: interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        from klcli.output import quiet_broken_pipe

        quiet_broken_pipe()
        return ExitStatus.OK
    except MemoryError:
        _error("out of memory; the input is too large for this machine's memory")
        return ExitStatus.ERROR
    except OSError as exc:  # the system refused: not a bug in klcli
        if debug:
            raise
        message, status = _os_error(exc)
        _error(message)
        return status
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (run with KLCLI_DEBUG=1 for the traceback, "
               "and please report it)")
        return ExitStatus.ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _typer_error() -> type[Exception]:
    """Typer's own usage errors (bad option, missing argument): TyperException from Typer 0.28 on, the
    ClickException of the Click it vendors before (0.28 derives that from TyperException)."""
    import typer

    try:
        return typer.TyperException
    except AttributeError:
        from typer._click.exceptions import ClickException

        return ClickException


def run() -> None:
    """The entry point (kept for ``klcli.cli:run``; the console script's is :func:`klcli.streams.run`)."""
    from klcli.streams import run as run_process

    run_process()
