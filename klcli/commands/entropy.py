"""``entropy``: H(P) per row, with normalised entropy and effective support; ``--by-leading`` groups rows.

One operand streams through the engine as two do for ``kl`` (:func:`klcli.commands.common.run_rows`, the
one-operand form of ``run_pairs``), with :func:`klcli.core.discrete.entropy_rows` as the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from klcli.commands.common import Reading, describe_inputs, open_operands, run_rows, summaries
from klcli.core.discrete import entropy_rows
from klcli.core.logspace import LogRows
from klcli.core.stats import summarize
from klcli.errors import InputError, ShapeError, UsageError
from klcli.result import Result

# Only H is in --base units: H/log V and exp(H nats) are unit-free (the base cancels, or is fixed at e).
INFORMATION = {"entropy": 1.0, "by.mean": 1.0, "by.stderr": 1.0, "by.min": 1.0, "by.max": 1.0}


def _kernel(p: LogRows) -> dict[str, np.ndarray]:
    entropy = entropy_rows(p)
    vocab = p.shifted.shape[1]
    # One outcome: H = 0 and log V = 0; the row is certain, so its normalised entropy is 0 (not 0/0).
    normalized = entropy / math.log(vocab) if vocab > 1 else np.zeros_like(entropy)
    with np.errstate(over="ignore"):
        support = np.exp(entropy)
    return {"entropy": entropy, "normalized_entropy": normalized, "effective_support": support}


def group_shape(shape: tuple, rows: int, by_leading: int, label: str) -> tuple[int, ...]:
    """The leading axes that index the groups of ``--by-leading N``; an error naming the shape if there are too few.

    The input must have rank ≥ N + 1: N indexing axes, then the outcome axis; the axes between are the rows of
    each group (none: each group is one row).

    Examples
    --------
    >>> group_shape((2, 3, 5, 7), 30, 2, "P")
    (2, 3)
    """
    if len(shape) < by_leading + 1:
        raise ShapeError(f"{label}: --by-leading {by_leading} needs an array of rank >= {by_leading + 1} "
                         f"({by_leading} leading axes to group by, then the outcomes), got shape {tuple(shape)}")
    leading = tuple(rows if size is None else int(size) for size in shape[:by_leading])
    if rows % max(1, math.prod(leading)):
        raise ShapeError(f"{label}: {rows} rows do not split into the {math.prod(leading)} groups of the leading "
                         f"axes {leading}")
    return leading


def by_group(values: np.ndarray, leading: tuple[int, ...]) -> list[dict]:
    """count, mean, stderr, min and max of each group of consecutive rows, in row-major order of the index."""
    groups = math.prod(leading)
    size = values.size // groups if groups else 0
    entries = []
    for number, index in enumerate(np.ndindex(*leading)):
        summary = summarize(values[number * size:(number + 1) * size])
        entries.append({"index": [int(i) for i in index], "count": summary["count"], "mean": summary["mean"],
                        "stderr": summary["stderr"], "min": summary["min"], "max": summary["max"]})
    return entries


def entropy(p, reading: Reading, *, by_leading: int = 0, progress=None) -> Result:
    """H(P) = −Σ p log p per row (nats), H/log V and exp H; with ``by_leading`` N, per group of the N leading axes."""
    if by_leading < 0:
        raise UsageError(f"--by-leading {by_leading}: give the number of leading axes to group by (>= 1)")
    (source,) = open_operands((p, "P"))
    run = run_rows(source, reading, _kernel, progress)
    if not run.rows:
        raise InputError(f"{source.label}: holds no rows")
    metrics = summaries(run.per_row)
    figures: dict = {}
    if by_leading:
        leading = group_shape(source.shape, run.rows, by_leading, source.label)
        figures["by"] = by_group(run.per_row["entropy"], leading)
    return Result(
        command="entropy",
        headline="mean H(P)",
        value=metrics["entropy"]["mean"],
        rows=run.rows,
        inputs=describe_inputs([source], [reading.p_kind], [run.p_rows], [run.p_width]),
        summary=metrics["entropy"],
        metrics=metrics,
        figures=figures,
        per_row=run.per_row,
        notes=reading.notes(),
        information=dict(INFORMATION),
    )
