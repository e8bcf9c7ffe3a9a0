"""The summary statistics klcli reports over per-row values (SPEC §4).

Per-row values are kept whole (8 bytes a row), so percentiles are exact rather
than sketched. Conventions follow numpy and llama.cpp: ``std`` is the sample
standard deviation (n−1), ``stderr`` = std/√n, percentiles interpolate
linearly at fraction·(n−1).
"""

from __future__ import annotations

import math

import numpy as np

# (JSON key, fraction) for each reported percentile.
PERCENTILES = (
    ("p0_1", 0.001),
    ("p1", 0.01),
    ("p5", 0.05),
    ("p10", 0.10),
    ("p25", 0.25),
    ("median", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
)

SUMMARY_KEYS = ("count", "mean", "std", "stderr", "min") + tuple(k for k, _ in PERCENTILES) + ("max", "argmax")


def quantile(sorted_values: np.ndarray, fraction: float) -> float:
    """Linear interpolation at ``fraction·(n−1)`` of sorted values.

    Equal neighbours return themselves, so an infinite tail gives ``inf``
    rather than the NaN of ``inf − inf``.

    Examples
    --------
    >>> import numpy as np
    >>> quantile(np.array([1.0, 2.0, 3.0, 4.0]), 0.5)
    2.5
    >>> quantile(np.array([1.0, np.inf]), 0.5)
    inf
    """
    position = fraction * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    low, high = float(sorted_values[below]), float(sorted_values[above])
    if low == high or position == below:
        return low
    return low + (high - low) * (position - below)


def summarize(values: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Count, mean, spread, percentiles and the row of the maximum.

    Undefined figures (the spread of one value, or of values including
    ``inf``) are ``None``. ``rows`` is the input row of each value when some
    rows were left out (ignored positions, padding): ``argmax`` is then that
    row, not the value's place among the kept ones (SPEC §4).

    Examples
    --------
    >>> s = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    >>> s["count"], s["mean"], round(s["std"], 12), s["median"], s["max"], s["argmax"]
    (4, 2.5, 1.290994448736, 2.5, 4.0, 3)
    >>> summarize(np.array([1.0, 5.0]), rows=np.array([3, 7]))["argmax"]
    7
    """
    values = np.asarray(values, dtype=np.float64)
    count = int(values.size)
    if count == 0:
        return {key: (0 if key == "count" else None) for key in SUMMARY_KEYS}
    ordered = np.sort(values)
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if count > 1 and np.isfinite(values).all() else None
    summary: dict[str, float | int | None] = {
        "count": count,
        "mean": mean,
        "std": std,
        "stderr": std / math.sqrt(count) if std is not None else None,
        "min": float(ordered[0]),
    }
    for key, fraction in PERCENTILES:
        summary[key] = quantile(ordered, fraction)
    summary["max"] = float(ordered[-1])
    at = int(np.argmax(values))
    summary["argmax"] = int(rows[at]) if rows is not None else at
    return summary
