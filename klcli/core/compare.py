"""Drift statistics between a base and a test model's distributions at the same positions.

Everything per position is computed from one log-ratio d = log(p_base/p_test)
per block, so the report costs little more than a KL pass. Top-1 and top-k
ties are broken by the lowest vocabulary index, as ``numpy.argmax`` does.
"""

from __future__ import annotations

import math

import numpy as np

from klcli.core.discrete import js_from_ratio
from klcli.core.logspace import LogRows, log_ratio


def top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """A boolean mask of each row's k largest entries, ties taken by lowest index.

    Examples
    --------
    >>> top_k_mask(np.array([[1.0, 3.0, 3.0, 2.0]]), 2).tolist()
    [[False, True, True, False]]
    >>> top_k_mask(np.array([[5.0, 5.0, 5.0]]), 2).tolist()
    [[True, True, False]]
    """
    vocab = values.shape[1]
    if k >= vocab:
        return np.ones(values.shape, dtype=bool)
    kth = np.partition(values, vocab - k, axis=1)[:, vocab - k, None]  # the k-th largest value of each row
    above = values > kth
    tied = values == kth
    room = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


def _masked_sum(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        terms = weights * values
    terms[weights == 0] = 0.0
    return np.sum(terms, axis=1)


def position_stats(base: LogRows, test: LogRows, top_k: int) -> dict[str, np.ndarray]:
    """Per position: both KL directions, JS, total variation, both argmaxes and the top-k overlap."""
    d = log_ratio(base, test)
    p, q = base.probs(), test.probs()
    k = min(top_k, d.shape[1])
    overlap = np.sum(top_k_mask(base.shifted, k) & top_k_mask(test.shifted, k), axis=1) / k
    return {
        "kl": _masked_sum(p, d),
        "kl_reverse": _masked_sum(q, -d),
        "js": js_from_ratio(d, p, q),
        "tv": 0.5 * np.sum(np.abs(p - q), axis=1),
        "base_top1": np.argmax(base.shifted, axis=1),
        "test_top1": np.argmax(test.shifted, axis=1),
        "topk_overlap": overlap,
    }


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
