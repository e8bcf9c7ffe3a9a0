"""Drift statistics between a base and a test model's distributions at the same positions.

Everything per position is computed from one log-ratio d = log(p_base/p_test)
per block, so the report costs little more than a KL pass. Top-1 and top-k
ties are broken by the lowest vocabulary index, as ``numpy.argmax`` does.
"""

from __future__ import annotations

import math

import numpy as np

from klcli.core.discrete import expectation, js_rows, refined
from klcli.core.logspace import LogRows, log_ratio


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's k largest entries' indices, largest first, ties by lowest index.

    Rather than partition or scan every row element by element, cut it into
    about 256 segments and take their maxima (one pass): the k-th largest
    segment maximum is a lower bound on the k-th largest entry, so only the
    few segments that reach it need a closer look. Of the segments whose
    maximum only ties it, the first k suffice (each holds a tied entry, and
    ties go to the lowest index), and of the entries that tie it the first k:
    rows of equal or mostly tied logits (padding, degenerate rows) cost
    what other rows do.

    Examples
    --------
    >>> top_k(np.array([[1.0, 3.0, 3.0, 2.0], [4.0, 0.0, 5.0, 5.0]]), 2).tolist()
    [[1, 2], [2, 3]]
    """
    rows, vocab = values.shape
    k = min(k, vocab)
    size = max(1, -(-vocab // 256))
    starts = np.arange(0, vocab, size)
    segment_max = np.maximum.reduceat(values, starts, axis=1)
    segments = starts.size
    if segments >= k:
        threshold = np.partition(segment_max, segments - k, axis=1)[:, segments - k]
    else:  # fewer segments than k (a tiny vocabulary): every entry is a candidate
        threshold = np.full(rows, -np.inf)
    tied = segment_max == threshold[:, None]
    needed = (segment_max > threshold[:, None]) | (tied & (np.cumsum(tied, axis=1) <= k))
    row, segment = np.nonzero(needed)
    column = segment[:, None] * size + np.arange(size)
    inside = column < vocab
    column = np.where(inside, column, vocab - 1)
    value = np.asarray(values[row[:, None], column], dtype=np.float64)
    at = threshold[row][:, None]
    ties = (inside & (value == at)).ravel()
    before = np.cumsum(ties) - ties  # tied entries before each one, counted from the first candidate
    first = np.searchsorted(row, row)  # each candidate segment's row's first candidate segment
    rank = before - before[first * column.shape[1]].repeat(column.shape[1])  # … within its row, in index order
    keep = inside & ((value > at) | (ties & (rank < k)).reshape(value.shape))
    row, column, value = np.broadcast_to(row[:, None], column.shape)[keep], column[keep], value[keep]
    order = np.lexsort((column, -value, row))
    row, column = row[order], column[order]
    rank = np.arange(row.size) - np.searchsorted(row, np.arange(rows))[row]
    return column[rank < k].reshape(rows, k)


def position_stats(base: LogRows, test: LogRows, top_k_size: int) -> dict[str, np.ndarray]:
    """Per position: both KL directions, JS, total variation, both argmaxes and the top-k overlap."""
    d = log_ratio(base, test)
    base_top, test_top = top_k(base.shifted, top_k_size), top_k(test.shifted, top_k_size)
    shared = (base_top[:, :, None] == test_top[:, None, :]).any(axis=2).sum(axis=1)
    with np.errstate(invalid="ignore"):
        reverse = -expectation(test, d)
    return {
        "kl": refined(expectation(base, d), d, test, p=base),
        "kl_reverse": refined(reverse, d, base, sign=-1.0, p=test),
        "js": js_rows(base, test),
        "tv": total_variation(base, test),
        "base_top1": base_top[:, 0],
        "test_top1": test_top[:, 0],
        "topk_overlap": shared / base_top.shape[1],
    }


def total_variation(base: LogRows, test: LogRows) -> np.ndarray:
    """½ Σ |p − q| per row (either side may be a single row, broadcast)."""
    difference = np.subtract(base.probs(), test.probs())
    return 0.5 * np.sum(np.abs(difference, out=difference), axis=1)


def label_stats(base: LogRows, test: LogRows, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per position: each model's NLL of the observed token, and Δp = p_test(label) − p_base(label)."""
    rows = np.arange(labels.shape[0])
    log_p_base = base.shifted[rows, labels] - base.offset
    log_p_test = test.shifted[rows, labels] - test.offset
    return {
        "nll_base": -log_p_base,
        "nll_test": -log_p_test,
        "delta_p": np.exp(log_p_test) - np.exp(log_p_base),
    }


def agreement_stderr(fraction: float, count: int) -> float | None:
    """√(p(1−p)/(n−1)), the standard error of an agreement rate (as llama.cpp reports).

    Examples
    --------
    >>> agreement_stderr(0.5, 101)
    0.05
    """
    return math.sqrt(fraction * (1.0 - fraction) / (count - 1)) if count > 1 else None


def nll_correlation(nll_base: np.ndarray, nll_test: np.ndarray) -> float | None:
    """Pearson correlation of the two models' token NLLs; None where it is undefined.

    Undefined with fewer than two tokens, when either side's NLLs are all equal
    (a zero standard deviation: NumPy would give NaN, or rounding noise), or
    when a loss is infinite.

    Examples
    --------
    >>> nll_correlation(np.array([1.0, 2.0, 4.0]), np.array([2.0, 4.0, 8.0]))
    1.0
    >>> nll_correlation(np.array([1.0, 2.0]), np.array([3.0, 3.0])) is None
    True
    """
    if nll_base.size < 2 or not (np.all(np.isfinite(nll_base)) and np.all(np.isfinite(nll_test))):
        return None
    if np.ptp(nll_base) == 0 or np.ptp(nll_test) == 0:
        return None
    return float(np.corrcoef(nll_base, nll_test)[0, 1])


def paired_difference(test: np.ndarray, base: np.ndarray) -> tuple[float, float | None]:
    """Mean of test − base and its standard error √((E[x²]−E[x]²)/(n−1)).

    Examples
    --------
    >>> paired_difference(np.array([2.0, 4.0]), np.array([1.0, 1.0]))
    (2.0, 1.0)
    """
    difference = test - base
    mean = float(np.mean(difference))
    if difference.size < 2:
        return mean, None
    return mean, float(np.std(difference, ddof=1) / math.sqrt(difference.size))
