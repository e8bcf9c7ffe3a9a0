"""The command line: one small function per subcommand, and the error boundary.

Nothing here computes. Each command turns its options into a reading and a
delivery, calls its function in :mod:`klcli.commands`, and delivers the result.
:func:`main` is the only place errors become ``klcli: error: …`` and exit codes.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from klcli import __version__
from klcli.errors import KlcliError, UsageError
from klcli.options import (
    BaseOpt,
    BitsOpt,
    CheckOpt,
    Direction,
    EpsilonOpt,
    FormatOpt,
    JsonOpt,
    Kind,
    KindOpt,
    LogitsOpt,
    NoProgressOpt,
    NormalizeOpt,
    OutputOpt,
    PerRowOpt,
    PKindOpt,
    QKindOpt,
    QuietOpt,
    TemperatureOpt,
)

app = typer.Typer(
    name="klcli",
    help="Information theory over distributions and model outputs: KL, cross-entropy, JS, perplexity, drift.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

P_ARG = Annotated[str, typer.Argument(metavar="P", help="The first distribution(s): a file, FILE:SELECTOR, "
                                      "'-' for standard input, or inline numbers such as 0.1,0.9.",
                                      show_default=False)]
Q_ARG = Annotated[str, typer.Argument(metavar="Q", help="The second distribution(s), in the same forms; a single "
                                      "row is compared with every row of P.", show_default=False)]


def _version(value: bool) -> None:
    if value:
        print(f"klcli {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """klcli: KL divergence, cross-entropy, entropy, Jensen–Shannon and more, from files or inline numbers.

    Exit status: 0 computed and every --check passed; 1 a check failed; 2 usage or input error; 130 interrupted.
    """


def _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature):
    from klcli.commands.common import Reading

    if logits and kind not in (None, Kind.logits):
        raise UsageError(f"--logits and --kind {kind.value} disagree; give one of them")
    if not temperature > 0:
        raise UsageError(f"--temperature {temperature:g}: the temperature must be > 0")
    both = Kind.logits if logits else kind
    return Reading(
        p_kind=(p_kind or both or Kind.probs).value,
        q_kind=(q_kind or both or Kind.probs).value,
        temperature=temperature,
        normalize=normalize,
        epsilon=epsilon,
    )


def _delivery(**options):
    from klcli.output import Delivery

    return Delivery.from_options(**options)


def _finish(delivery, compute, operands: list[str]) -> None:
    """Run ``compute(progress)`` and deliver its result; exit with the checks' verdict."""
    from klcli.io.output import check_output_path

    paths = [operand.split(":", 1)[0] if not os.path.exists(operand) else operand for operand in operands]
    if delivery.output is not None:
        check_output_path(delivery.output, paths)
    progress = delivery.progress_bar()
    try:
        result = compute(progress)
    finally:
        progress.close()
    raise typer.Exit(delivery.deliver(result, paths))


@app.command("kl")
def kl_command(
    p: P_ARG,
    q: Q_ARG,
    direction: Annotated[Direction, typer.Option(
        "--direction", help="forward D(P‖Q); reverse D(Q‖P); both adds D(Q‖P) and the symmetric sum.")
    ] = Direction.forward,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    base: BaseOpt = "e",
    bits: BitsOpt = False,
    fmt: FormatOpt = None,
    json_flag: JsonOpt = False,
    per_row: PerRowOpt = False,
    quiet: QuietOpt = False,
    output: OutputOpt = None,
    check: CheckOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Kullback–Leibler divergence D(P‖Q) = Σ p·log(p/q), row by row; the headline is the mean over rows.

    Examples:

      klcli kl 0.5,0.5 0.9,0.1 -q

      klcli kl sample_data/teacher_logits.npy sample_data/student_logits.npy --logits --check 'p99<0.5'
    """
    from klcli.commands import divergence

    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature)
    delivery = _delivery(fmt=fmt, json_flag=json_flag, per_row=per_row, quiet=quiet, output=output,
                         check=check, no_progress=no_progress, base=base, bits=bits)
    _finish(delivery, lambda progress: divergence.kl(p, q, reading, delivery.unit, direction=direction.value,
                                                     progress=progress), [p, q])


@app.command("xent")
def xent_command(
    p: P_ARG,
    q: Q_ARG,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    base: BaseOpt = "e",
    bits: BitsOpt = False,
    fmt: FormatOpt = None,
    json_flag: JsonOpt = False,
    per_row: PerRowOpt = False,
    quiet: QuietOpt = False,
    output: OutputOpt = None,
    check: CheckOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Cross-entropy H(P,Q) = −Σ p·log q, entropy H(P) and D(P‖Q), row by row; the headline is mean H(P,Q).

    Examples:

      klcli xent 0.5,0.5 0.25,0.75

      klcli xent sample_data/p.csv sample_data/q.csv --bits --json
    """
    from klcli.commands import divergence

    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature)
    delivery = _delivery(fmt=fmt, json_flag=json_flag, per_row=per_row, quiet=quiet, output=output,
                         check=check, no_progress=no_progress, base=base, bits=bits)
    _finish(delivery, lambda progress: divergence.xent(p, q, reading, delivery.unit, progress=progress), [p, q])


@app.command("js")
def js_command(
    p: P_ARG,
    q: Q_ARG,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="A,B", help="Weights π1,π2 (≥ 0, summing to 1) of the generalised JSD "
        "π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q; β,1−β is the GKD distillation loss. [default: 0.5,0.5]",
        show_default=False)] = None,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    base: BaseOpt = "e",
    bits: BitsOpt = False,
    fmt: FormatOpt = None,
    json_flag: JsonOpt = False,
    per_row: PerRowOpt = False,
    quiet: QuietOpt = False,
    output: OutputOpt = None,
    check: CheckOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Jensen–Shannon divergence (at most log 2) and distance √JSD, row by row; the headline is the mean JSD.

    Examples:

      klcli js 1,0 0,1 --bits -q

      klcli js sample_data/p.parquet sample_data/q.parquet --per-row --format csv
    """
    from klcli.commands import divergence

    pair = divergence.parse_weights(weights)
    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature)
    delivery = _delivery(fmt=fmt, json_flag=json_flag, per_row=per_row, quiet=quiet, output=output,
                         check=check, no_progress=no_progress, base=base, bits=bits)
    _finish(delivery, lambda progress: divergence.js(p, q, reading, delivery.unit, weights=pair,
                                                     progress=progress), [p, q])


def _error(message: str) -> None:
    lines = str(message).strip().splitlines() or ["unknown error"]
    print(f"klcli: error: {lines[0]}", file=sys.stderr)
    if len(lines) > 1:
        print(f"klcli: {' '.join(line.strip() for line in lines[1:])}", file=sys.stderr)


def _quiet_broken_pipe() -> None:
    """Downstream closed the pipe (``| head -1``): end quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run klcli; return the exit code (SPEC §5). Tracebacks only with ``KLCLI_DEBUG=1``."""
    debug = os.environ.get("KLCLI_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="klcli", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as done:
        return done.exit_code
    except KlcliError as exc:
        if debug:
            raise
        _error(str(exc))
        return exc.exit_code
    except typer.TyperException as exc:  # Typer's own usage errors: bad option, missing argument
        if debug:
            raise
        _error(f"{exc.format_message().rstrip('.')} (see klcli --help)")
        return getattr(exc, "exit_code", 2) or 2
    except (KeyboardInterrupt, typer.Abort):
        print("klcli: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0
    except MemoryError:
        _error("out of memory; the input is too large for this machine's memory")
        return 2
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (run with KLCLI_DEBUG=1 for the traceback, "
               "and please report it)")
        return 2


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
