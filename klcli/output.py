"""Delivering a result: evaluate the checks, render, write, and choose the exit code."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from klcli.checks import Check, describe_failure, evaluate, parse_check
from klcli.errors import ExitStatus, UsageError
from klcli.result import Result
from klcli.units import Unit


@dataclass
class Delivery:
    """How the user asked to see a result (the output options, validated)."""

    format: str = "table"
    per_row: bool = False
    quiet: bool = False
    output: str | None = None
    checks: list[Check] = field(default_factory=list)
    unit: Unit = field(default_factory=lambda: Unit.parse("e"))
    progress: bool = True
    # Every string option of the command: anything the readers may open counts as an input -o must not name.
    protected: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, *, fmt, json_flag, per_row, quiet, output, check, no_progress, base="e", bits=False):
        fmt = fmt.value if fmt is not None else None
        if json_flag:
            if fmt not in (None, "json"):
                raise UsageError(f"--json and --format {fmt} disagree; give one of them")
            fmt = "json"
        if quiet and fmt not in (None, "table"):
            raise UsageError(f"-q prints one number; it cannot be combined with --format {fmt}")
        if bits:
            if base not in ("e", "2"):
                raise UsageError(f"--bits and --base {base} disagree; give one of them")
            base = "2"
        fmt = fmt or "table"
        return cls(
            format=fmt,
            per_row=per_row or fmt in ("csv", "ndjson"),
            quiet=quiet,
            output=output,
            checks=[parse_check(expr) for expr in check or []],
            unit=Unit.parse(base),
            progress=not no_progress and _is_terminal(sys.stderr),
        )

    def progress_bar(self, total: int | None = None):
        from klcli.render import Progress

        return Progress(total, self.progress)

    def check_target(self, operands: list[str], reports=()) -> None:
        """Refuse an ``-o`` path that is one of the inputs (or cannot be written), before any work is done."""
        if self.output not in (None, "-"):
            from klcli.io.output import check_output_path

            check_output_path(self.output, [*operands, *self.protected])
        elif 1 in _closed_streams():
            raise UsageError("standard output is closed (>&-): nowhere to print the result; give -o FILE")
        self.check_reports(operands, reports)

    def check_reports(self, operands: list[str], reports) -> None:
        """Refuse a further report file (``--html``) that is an input or ``-o``'s file, before any work is done."""
        from klcli.io.output import check_output_path, input_identities

        for report in reports:
            written = self.output not in (None, "-")
            if report.path == self.output or written and (input_identities([self.output]).keys()
                                                          & input_identities([report.path]).keys()):
                raise UsageError(f"{report.option} {report.path} and -o {self.output} name the same file; give "
                                 "each its own")
            others = [name for name in self.protected if name != report.path]
            check_output_path(report.path, [*operands, *others], option=report.option)

    def write_reports(self, reports, document: dict) -> None:
        """Write each further report file (``--html``) from the delivered document, atomically like ``-o``."""
        from klcli.io.output import write_result

        for report in reports:
            write_result(report.path, report.render(document), stdout=sys.stdout, option=report.option)

    def report(self, result: Result) -> tuple[Result, dict]:
        """The result in the asked unit, and its JSON document with the checks' outcomes.

        The unit is applied here, once, at delivery; the document is built
        once, and the checks read that same document.
        """
        result = result.in_unit(self.unit)
        document = result.document(per_row=self.per_row)
        result.checks = evaluate(self.checks, document)
        document["checks"], document["passed"] = result.checks, result.passed
        return result, document

    def deliver(self, result: Result, reports=()) -> int:
        """Print (or write) the result, its further reports and the notes; return the exit code (0, or 1 if a check
        failed)."""
        from klcli.errors import is_loud, shown
        from klcli.streams import say

        result, document = self.report(result)
        self.write_reports(reports, document)
        to_stdout = self.output in (None, "-")
        text = self._text(result, document, to_terminal=to_stdout and _is_terminal(sys.stdout),
                          encoding=(getattr(sys.stdout, "encoding", None) or "utf-8") if to_stdout else "utf-8")
        for warning in result.warnings + [note for note in result.notes if is_loud(note)]:
            say(f"klcli: note: {shown(warning)}")
        for outcome in result.checks:
            if not outcome["passed"]:
                say(f"klcli: {describe_failure(outcome)}")
        if not to_stdout:
            from klcli.io.output import write_result

            write_result(self.output, text, stdout=sys.stdout)
        else:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                quiet_broken_pipe()
        return ExitStatus.OK if result.passed else ExitStatus.CHECK_FAILED

    def _text(self, result, document: dict, *, to_terminal: bool, encoding: str) -> str:
        """The rendered result, in characters ``encoding`` can hold (ASCII boxes and symbols if it must)."""
        from klcli import render

        if self.quiet:
            return render.quiet(result)
        color = to_terminal and "NO_COLOR" not in os.environ
        text = render.render(result, self.format, per_row=self.per_row, color=color, document=document)
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            text = render.render(result, self.format, per_row=self.per_row, color=color, ascii_only=True,
                                 document=document)
            text = text.encode(encoding, errors="replace").decode(encoding, errors="replace")
        return text


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def _closed_streams() -> set[int]:
    from klcli.streams import CLOSED

    return CLOSED


def quiet_broken_pipe() -> None:
    """Downstream closed the pipe (``| head -1``): end quietly, as Unix tools do.

    Standard output is pointed at /dev/null so the interpreter's final flush
    does not complain a second time.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
