"""Where the drift is: a log-spaced histogram of per-position KL, and KL along the sequence.

Both are computed from the per-position KL a compare run keeps anyway (for its
exact percentiles), so they cost one pass over the kept values.

Histogram bins (``log_histogram``): KL spans many orders of magnitude (1e-6 at
positions the models agree on, 1 or more where they do not), so the bins are
log-spaced with edges at round powers of ten: from the decade at or below the
smallest positive finite value, ``10**lo``, to the decade at or above the
largest, ``10**hi`` (at least one decade), split into 4 bins a decade when the
values span up to 3 decades, 2 up to 6, 1 up to 12, and beyond that into 12
bins of ``ceil(decades / 12)`` decades each; empty bins before the first value
and after the last are dropped. Each bin is ``[lo, hi)`` and the
last also holds its upper edge, as ``numpy.histogram`` counts. Exact zeros
(identical distributions) have their own count, ``zero``, as have infinite
values (``infinite``: the test gives probability 0 to a token the base does not).
"""

from __future__ import annotations

import math

import numpy as np


def _bins(decades: int) -> tuple[int, int]:
    """(bins, decades each bin spans as a 1/per fraction): 4, 2 or 1 a decade, or 12 wider bins."""
    for most, per in ((3, 4), (6, 2), (12, 1)):
        if decades <= most:
            return decades * per, per
    return 12, 0


def log_edges(smallest: float, largest: float) -> np.ndarray:
    """The bin edges for positive finite values from ``smallest`` to ``largest`` (see the module's rule).

    Examples
    --------
    >>> [float(f"{edge:.3g}") for edge in log_edges(0.02, 0.5)]
    [0.01, 0.0178, 0.0316, 0.0562, 0.1, 0.178, 0.316, 0.562, 1.0]
    >>> log_edges(1e-9, 3.0).size - 1  # 10 decades: one bin each
    10
    """
    lo = math.floor(math.log10(smallest))
    if 10.0**lo > smallest:  # log10 rounded up across a power of ten
        lo -= 1
    hi = max(math.ceil(math.log10(largest)), lo + 1)
    if 10.0**hi < largest:
        hi += 1
    bins, per = _bins(hi - lo)
    width = 1 / per if per else math.ceil((hi - lo) / 12)  # in decades
    return np.array([10.0 ** (lo + step * width) for step in range(bins + 1)])


def log_histogram(values: np.ndarray) -> dict:
    """Counts of ``values`` in log-spaced bins, with exact zeros and infinities apart.

    Returns ``{"edges": [...], "counts": [...], "zero": n, "infinite": n}``
    (``len(edges) == len(counts) + 1``; both empty when no value is positive
    and finite). Values ≤ 0 count as zero (a KL is never negative; rounding
    is clamped before this); NaN is not counted.

    Examples
    --------
    >>> h = log_histogram(np.array([0.0, 0.02, 0.03, 0.5, np.inf]))
    >>> h["counts"], h["zero"], h["infinite"]
    ([2, 0, 0, 0, 0, 1], 1, 1)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    positive = values[(values > 0) & np.isfinite(values)]
    zero, infinite = int(np.count_nonzero(values <= 0)), int(np.count_nonzero(values == np.inf))
    if positive.size == 0:
        return {"edges": [], "counts": [], "zero": zero, "infinite": infinite}
    edges = log_edges(float(positive.min()), float(positive.max()))
    # Bin i holds edges[i] <= v < edges[i+1]; the largest edge belongs to the last bin.
    where = np.minimum(np.searchsorted(edges, positive, side="right") - 1, edges.size - 2)
    counts = np.bincount(where, minlength=edges.size - 1)
    held = np.flatnonzero(counts)
    first, last = int(held[0]), int(held[-1])
    edges, counts = edges[first:last + 2], counts[first:last + 1]
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts], "zero": zero, "infinite": infinite}


def mean_by_position(values: np.ndarray, rows: np.ndarray, length: int | None) -> list[float] | None:
    """The mean of ``values`` at each position index ``row % length`` (over sequences); None without sequences.

    ``rows`` are the input rows of the values (flat over batch × length); an
    index no value was kept for is NaN (null in JSON).

    Examples
    --------
    >>> mean_by_position(np.array([1.0, 2.0, 3.0, 5.0]), np.array([0, 1, 2, 3]), 2)
    [2.0, 3.5]
    >>> mean_by_position(np.array([1.0, 3.0]), np.array([0, 2]), 2)
    [2.0, nan]
    """
    if not length:
        return None
    index = np.asarray(rows, dtype=np.int64) % length
    counts = np.bincount(index, minlength=length)
    sums = np.bincount(index, weights=np.asarray(values, dtype=np.float64), minlength=length)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return [float(m) for m in means]
