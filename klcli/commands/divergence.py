"""``kl``, ``xent`` and ``js``: divergences between two sets of distributions, row by row."""

from __future__ import annotations

import math

import numpy as np

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
from klcli.errors import UsageError
from klcli.result import Result
from klcli.units import Unit

DIRECTIONS = ("forward", "reverse", "both")
_SMOOTH_HINT = "P has mass where Q has none; --epsilon E smooths the distributions"


def _inputs(sources, reading: Reading, run: PairRun) -> list[dict]:
    return describe_inputs(sources, [reading.p_kind, reading.q_kind], [run.p_rows, run.q_rows],
                           [run.p_width, run.q_width])


def kl(p: str, q: str, reading: Reading, unit: Unit, *, direction: str = "forward", progress=None,
       tail: str = "bucket", t2_scale: bool = False) -> Result:
    """D(P‖Q) per row; ``reverse`` gives D(Q‖P), ``both`` both and their sum.

    ``t2_scale`` multiplies by T² (the temperature squared), as the distillation
    loss of Hinton et al. (2015) does to keep gradients comparable across temperatures.
    """
    p_source, q_source, extras = open_pair(p, q, tail=tail)

    def kernel(p_rows, q_rows):
        return by_direction(direction, lambda: kl_rows(p_rows, q_rows), lambda: kl_rows(q_rows, p_rows))

    run = run_pairs(p_source, q_source, reading, kernel, progress)
    scale = reading.temperature**2 if t2_scale else 1.0
    per_row = {name: unit.from_nats(values) * scale for name, values in run.per_row.items()}
    metrics = summaries(per_row)
    head, headline = headline_of(direction)
    notes = reading.notes()
    precision, precision_notes = reading.effective_precision([p_source, q_source], [reading.p_kind, reading.q_kind])
    notes += precision_notes
    if t2_scale:
        notes.append(f"scaled by T² = {scale:g} (Hinton et al. 2015's distillation loss)")
    warnings = []
    if "kl" in per_row:
        warnings += infinite_note("D(P‖Q)", per_row["kl"], _SMOOTH_HINT)
    if "kl_reverse" in per_row:
        warnings += infinite_note("D(Q‖P)", per_row["kl_reverse"], "Q has mass where P has none; --epsilon E smooths")
    return Result(
        command="kl",
        headline=headline,
        value=metrics[head]["mean"],
        unit=unit,
        rows=run.rows,
        inputs=_inputs([p_source, q_source], reading, run),
        summary=metrics[head],
        metrics=metrics,
        figures={"direction": direction, "precision": precision,
                 **({"t2_scale": scale} if t2_scale else {}), **extras},
        per_row=per_row,
        notes=notes,
        warnings=warnings,
    )


def xent(p: str, q: str, reading: Reading, unit: Unit, *, progress=None, tail: str = "bucket") -> Result:
    """Cross-entropy H(P,Q), entropy H(P) and D(P‖Q) per row.

    D(P‖Q) is computed directly rather than as the difference H(P,Q) − H(P),
    which loses digits when both are large and nearly equal; H(P,Q) is then
    H(P) + D(P‖Q), which also saves a pass over the rows.
    """
    p_source, q_source, extras = open_pair(p, q, tail=tail)

    def kernel(p_rows, q_rows):
        entropy = entropy_rows(p_rows)
        if entropy.shape[0] == 1 and q_rows.shifted.shape[0] > 1:
            entropy = np.repeat(entropy, q_rows.shifted.shape[0])
        divergence = kl_rows(p_rows, q_rows)
        return {"cross_entropy": entropy + divergence, "entropy": entropy, "kl": divergence}

    run = run_pairs(p_source, q_source, reading, kernel, progress)
    per_row = {name: unit.from_nats(values) for name, values in run.per_row.items()}
    metrics = summaries(per_row)
    notes = reading.notes()
    warnings = infinite_note("H(P,Q)", per_row["cross_entropy"], _SMOOTH_HINT)
    return Result(
        command="xent",
        headline="mean H(P,Q)",
        value=metrics["cross_entropy"]["mean"],
        unit=unit,
        rows=run.rows,
        inputs=_inputs([p_source, q_source], reading, run),
        summary=metrics["cross_entropy"],
        metrics=metrics,
        figures=extras,
        per_row=per_row,
        notes=notes,
        warnings=warnings,
    )


def parse_weights(text: str | None) -> tuple[float, float]:
    """``--weights a,b``: non-negative, summing to 1.

    Examples
    --------
    >>> parse_weights("0.1,0.9")
    (0.1, 0.9)
    """
    if text is None:
        return 0.5, 0.5
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--weights {text!r}: give two numbers a,b such as 0.5,0.5") from None
    if not (first >= 0 and second >= 0 and math.isclose(first + second, 1.0, rel_tol=0, abs_tol=1e-9)):
        raise UsageError(f"--weights {text!r}: the weights must be >= 0 and sum to 1 (e.g. 0.9,0.1)")
    return first, second


def js(p: str, q: str, reading: Reading, unit: Unit, *, weights: tuple[float, float] = (0.5, 0.5),
       progress=None, tail: str = "bucket") -> Result:
    """Jensen–Shannon divergence per row and its square root, the JS distance.

    The distance is √JSD in the chosen unit, as ``scipy.spatial.distance.jensenshannon``
    computes it with its ``base`` argument.
    """
    p_source, q_source, extras = open_pair(p, q, tail=tail)

    def kernel(p_rows, q_rows):
        return {"js_divergence": js_rows(p_rows, q_rows, weights)}

    run = run_pairs(p_source, q_source, reading, kernel, progress)
    divergence = unit.from_nats(run.per_row["js_divergence"])
    per_row = {"js_divergence": divergence, "js_distance": np.sqrt(np.maximum(divergence, 0.0))}
    metrics = summaries(per_row)
    return Result(
        command="js",
        headline="mean JS divergence",
        value=metrics["js_divergence"]["mean"],
        unit=unit,
        rows=run.rows,
        inputs=_inputs([p_source, q_source], reading, run),
        summary=metrics["js_divergence"],
        metrics=metrics,
        figures={"weights": list(weights), **extras},
        per_row=per_row,
        notes=reading.notes(),
    )
