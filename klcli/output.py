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
            progress=not no_progress and sys.stderr.isatty(),
        )

    def progress_bar(self, total: int | None = None):
        from klcli.render import Progress

        return Progress(total, self.progress)

    def check_target(self, operands: list[str]) -> None:
        """Refuse an ``-o`` path that is one of the inputs (or cannot be written), before any work is done."""
        if self.output is not None:
            from klcli.io.output import check_output_path

            check_output_path(self.output, operands)

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

    def deliver(self, result: Result) -> int:
        """Print (or write) the result and the notes; return the exit code (0, or 1 if a check failed)."""
        from klcli import render
        from klcli.io.output import write_atomically

        result, document = self.report(result)
        to_terminal = self.output is None and sys.stdout.isatty()
        if self.quiet:
            text = render.quiet(result)
        else:
            text = render.render(result, self.format, per_row=self.per_row,
                                 color=to_terminal and "NO_COLOR" not in os.environ, document=document)
        for warning in result.warnings:
            print(f"klcli: note: {warning}", file=sys.stderr)
        for outcome in result.checks:
            if not outcome["passed"]:
                print(f"klcli: {describe_failure(outcome)}", file=sys.stderr)
        if self.output is not None:
            write_atomically(self.output, text)
        else:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                quiet_broken_pipe()
        return ExitStatus.OK if result.passed else ExitStatus.CHECK_FAILED


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
