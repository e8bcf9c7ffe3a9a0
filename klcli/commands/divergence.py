"""``kl``, ``xent`` and ``js``: divergences between two sets of distributions, row by row.

The three commands are one table of metrics (:data:`METRICS`): each names its
kernel over two blocks of log-rows, its headline, which per-row figures are
information quantities, and its notes; :func:`divergence` streams any of them
through the engine and builds the Result (in nats) once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from klcli import engine
from klcli.commands.common import (
    PairRun,
    Reading,
    by_direction,
    describe_inputs,
    headline_of,
    infinite_note,
    open_pair,
    run_pairs,
    summaries,
)
from klcli.core.discrete import entropy_rows, js_rows, kl_rows
from klcli.core.logspace import LogRows
from klcli.errors import LOWER_BOUNDS, UsageError
from klcli.io.ranges import driving_cuts, row_count, row_range
from klcli.pieces import Layout, Piece, reads_stdin
from klcli.result import Result

DIRECTIONS = ("forward", "reverse", "both")
_SMOOTH_HINT = "P has mass where Q has none; --epsilon E smooths the distributions"

Kernel = Callable[[LogRows, LogRows], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Metric:
    """One divergence command: its kernel, headline and notes, as functions of its own options."""

    kernel: Callable[[dict], Kernel]
    headline: Callable[[dict], tuple[str, str]]  # (per-row name of the headline, how people read it)
    information: dict[str, float]  # per-row names → power of the logarithm (see Result.information)
    figures: Callable[[dict, Reading, str], dict]  # (options, reading, the precision the figures were computed at)
    notes: Callable[[dict, Reading, list[str]], list[str]]  # (options, reading, notes on the precision)
    warnings: Callable[[dict[str, np.ndarray]], list[str]]
    derived: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda per_row: per_row
    scale: Callable[[dict, Reading], float] = lambda options, reading: 1.0


def _kl_kernel(options: dict) -> Kernel:
    direction = options.get("direction", "forward")
    return lambda p, q: by_direction(direction, lambda: kl_rows(p, q), lambda: kl_rows(q, p))


def _xent_kernel(options: dict) -> Kernel:
    """H(P,Q) as H(P) + D(P‖Q): D computed directly keeps the digits H(P,Q) − H(P) would lose."""

    def kernel(p_rows: LogRows, q_rows: LogRows) -> dict[str, np.ndarray]:
        entropy = entropy_rows(p_rows)
        if entropy.shape[0] == 1 and q_rows.shifted.shape[0] > 1:
            entropy = np.repeat(entropy, q_rows.shifted.shape[0])
        divergence = kl_rows(p_rows, q_rows)
        return {"cross_entropy": entropy + divergence, "entropy": entropy, "kl": divergence}

    return kernel


def _js_kernel(options: dict) -> Kernel:
    weights = options.get("weights", (0.5, 0.5))
    return lambda p, q: {"js_divergence": js_rows(p, q, weights)}


def _kl_warnings(per_row: dict[str, np.ndarray]) -> list[str]:
    warnings = []
    if "kl" in per_row:
        warnings += infinite_note("D(P‖Q)", per_row["kl"], _SMOOTH_HINT)
    if "kl_reverse" in per_row:
        warnings += infinite_note("D(Q‖P)", per_row["kl_reverse"], "Q has mass where P has none; --epsilon E smooths")
    return warnings


def _t2(options: dict, reading: Reading) -> float:
    return reading.temperature**2 if options.get("t2_scale") else 1.0


def _kl_notes(options: dict, reading: Reading, precision_notes: list[str]) -> list[str]:
    notes = reading.notes() + precision_notes
    if options.get("t2_scale"):
        notes.append(f"scaled by T² = {_t2(options, reading):g} (Hinton et al. 2015's distillation loss)")
    return notes


METRICS: dict[str, Metric] = {
    "kl": Metric(
        kernel=_kl_kernel,
        headline=lambda options: headline_of(options.get("direction", "forward")),
        information={"kl": 1.0, "kl_reverse": 1.0, "kl_symmetric": 1.0},
        figures=lambda options, reading, precision: {
            "direction": options.get("direction", "forward"), "precision": precision,
            **({"t2_scale": _t2(options, reading)} if options.get("t2_scale") else {})},
        notes=_kl_notes,
        warnings=_kl_warnings,
        scale=_t2,
    ),
    "xent": Metric(
        kernel=_xent_kernel,
        headline=lambda options: ("cross_entropy", "mean H(P,Q)"),
        information={"cross_entropy": 1.0, "entropy": 1.0, "kl": 1.0},
        figures=lambda options, reading, precision: {},
        notes=lambda options, reading, precision_notes: reading.notes(),
        warnings=lambda per_row: infinite_note("H(P,Q)", per_row["cross_entropy"], _SMOOTH_HINT),
    ),
    "js": Metric(
        kernel=_js_kernel,
        headline=lambda options: ("js_divergence", "mean JS divergence"),
        # The distance √JSD is in the unit's square root, as scipy.spatial.distance.jensenshannon's ``base``.
        information={"js_divergence": 1.0, "js_distance": 0.5},
        # "precision" only where fast was asked (the default's figures keep their keys).
        figures=lambda options, reading, precision: {"weights": list(options.get("weights", (0.5, 0.5))),
                                                     **({"precision": precision} if reading.precision == "fast"
                                                        else {})},
        notes=lambda options, reading, precision_notes: reading.notes() + precision_notes,
        warnings=lambda per_row: [],
        derived=lambda per_row: {"js_divergence": per_row["js_divergence"],
                                 "js_distance": np.sqrt(np.maximum(per_row["js_divergence"], 0.0))},
    ),
}


def _inputs(sources, reading: Reading, run: PairRun) -> list[dict]:
    return describe_inputs(sources, [reading.p_kind, reading.q_kind], [run.p_rows, run.q_rows],
                           [run.p_width, run.q_width])


def divergence_layout(p, q, tail: str = "bucket") -> Layout:
    """The rows a pair's pieces divide: the longer side's (a single row is compared with every piece)."""
    from klcli.io.openai import is_logprobs_json

    if is_logprobs_json(p) or is_logprobs_json(q):
        return Layout(None, why="logprobs files are aligned as a whole")
    if reads_stdin(p, q):
        return Layout(None, why="standard input is read once")
    p_source, q_source, _ = open_pair(p, q, tail=tail)
    counts = [row_count(p_source), row_count(q_source)]
    if None in counts:
        return Layout(None, why="a text table's length is known only once it is read")
    total = max(count for count in counts if count is not None)
    return Layout(total, cuts=driving_cuts(total, (p_source, "rows"), (q_source, "rows")))


def divergence_map(command: str, p, q, reading: Reading, rows=None, *, progress=None, tail: str = "bucket",
                   **options) -> Piece:
    """Rows [a, b) of P and Q (all rows if ``rows`` is None) through ``METRICS[command]``'s kernel: the piece."""
    metric = METRICS[command]
    p_source, q_source, extras = open_pair(p, q, tail=tail)
    start = 0
    if rows is not None:
        start, stop = rows
        # A side of one row is compared with every row: every piece reads it whole.
        p_source, q_source = (source if row_count(source) == 1 else row_range(source, start, stop)
                              for source in (p_source, q_source))
    observed: list = []
    reading = replace(reading, observed=observed)
    run = run_pairs(p_source, q_source, reading, metric.kernel(options), progress, first_row=start)
    precision, precision_notes = reading.effective_precision([p_source, q_source], [reading.p_kind, reading.q_kind])
    reference_notes: list[str] = []
    if p_source.reference is not None:  # a top-K reference P: divergences on its partition, lower bounds
        from klcli.commands.reference import bound_note, bound_of

        extras = {**extras, "reference": bound_of(p_source)}
        reference_notes = bound_note(p_source)
    if extras.get("tail") == "bucket":  # OpenAI logprobs: the tokens outside both lists merged into one outcome
        reference_notes.append(f"{LOWER_BOUNDS} (OpenAI logprobs, --tail bucket): the tokens outside the listed "
                               "ones are one tail bucket, and merging outcomes can only lower a divergence")
    meta = {"inputs": _inputs([p_source, q_source], reading, run), "extras": extras, "precision": precision,
            "precision_notes": precision_notes, "notes": observed, "reference_notes": reference_notes}
    return Piece(engine.Partial(start, start + run.rows, run.per_row), meta)


def divergence_finish(command: str, piece: Piece, reading: Reading, **options) -> Result:
    """The Result (nats) of the merged piece of a divergence command."""
    metric = METRICS[command]
    meta = piece.meta
    reading = replace(reading, observed=list(meta.get("notes", [])))
    scale = metric.scale(options, reading)
    per_row = metric.derived({name: values * scale if scale != 1.0 else values
                              for name, values in piece.partial.per_row.items()})
    metrics = summaries(per_row)
    head, headline = metric.headline(options)
    result = Result(
        command=command,
        headline=headline,
        value=metrics[head]["mean"],
        rows=piece.partial.rows,
        inputs=meta["inputs"],
        summary=metrics[head],
        metrics=metrics,
        figures={**metric.figures(options, reading, meta["precision"]), **meta["extras"]},
        per_row=per_row,
        notes=metric.notes(options, reading, list(meta["precision_notes"])),
        warnings=metric.warnings(per_row),
        information={name: power for name, power in metric.information.items() if name in per_row},
    )
    result.notes.extend(meta.get("reference_notes", []))
    return result


def divergence(command: str, p, q, reading: Reading, *, progress=None, tail: str = "bucket", **options) -> Result:
    """Stream P and Q through ``METRICS[command]``'s kernel; the Result, in nats (one piece: every row)."""
    piece = divergence_map(command, p, q, reading, None, progress=progress, tail=tail, **options)
    return divergence_finish(command, piece, reading, **options)


def kl(p, q, reading: Reading, *, direction: str = "forward", progress=None, tail: str = "bucket",
       t2_scale: bool = False) -> Result:
    """D(P‖Q) per row; ``reverse`` gives D(Q‖P), ``both`` both and their sum.

    ``t2_scale`` multiplies by T² (the temperature squared), as the distillation
    loss of Hinton et al. (2015) does to keep gradients comparable across temperatures.
    """
    return divergence("kl", p, q, reading, progress=progress, tail=tail, direction=direction, t2_scale=t2_scale)


def xent(p, q, reading: Reading, *, progress=None, tail: str = "bucket") -> Result:
    """Cross-entropy H(P,Q), entropy H(P) and D(P‖Q) per row."""
    return divergence("xent", p, q, reading, progress=progress, tail=tail)


def parse_weights(text) -> tuple[float, float]:
    """``--weights a,b`` (or a pair of numbers): non-negative, summing to 1.

    Examples
    --------
    >>> parse_weights("0.1,0.9")
    (0.1, 0.9)
    >>> parse_weights((0.3, 0.7))
    (0.3, 0.7)
    """
    if text is None:
        return 0.5, 0.5
    try:
        parts = text.split(",") if isinstance(text, str) else list(text)
        first, second = (float(part) for part in parts)
    except (ValueError, TypeError):
        raise UsageError(f"--weights {text!r}: give two numbers a,b such as 0.5,0.5") from None
    if not (first >= 0 and second >= 0 and math.isclose(first + second, 1.0, rel_tol=0, abs_tol=1e-9)):
        raise UsageError(f"--weights {text!r}: the weights must be >= 0 and sum to 1 (e.g. 0.9,0.1)")
    return first, second


def js(p, q, reading: Reading, *, weights: tuple[float, float] = (0.5, 0.5), progress=None,
       tail: str = "bucket") -> Result:
    """Jensen–Shannon divergence per row and its square root, the JS distance.

    The distance is √JSD in the chosen unit, as ``scipy.spatial.distance.jensenshannon``
    computes it with its ``base`` argument.
    """
    return divergence("js", p, q, reading, progress=progress, tail=tail, weights=weights)
