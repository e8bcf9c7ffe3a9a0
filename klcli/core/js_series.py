"""The Jensen–Shannon divergence as a sum of non-negative terms: its element function g and g's power series.

With r = q/p = e^v and M/P = π1 + π2·r, element by element (no normalisation assumed)

    π1·p·log(p/m) + π2·q·log(q/m) = p·g(v),   g(v) = π2·r·log r − (π1 + π2·r)·log(π1 + π2·r) ≥ 0,

g convex in r and zero with its slope at v = 0. So J = E_p[g(v)]: where every |v| is small, summing
p·g(v) with g from its power series Σ_{k≥2} a_k·v^k (radius ≥ π) leaves no cancellation at all, and the
rounding is relative to J itself — what nearly identical rows need, whose J is far below the closed
form's absolute error (a few 1e-15). The float32 kernel (:mod:`klcli.core.fast_js`) and the precise one
(:func:`klcli.core.discrete.js_rows`, :func:`js_by_series`) share these coefficients.
"""

from __future__ import annotations

import functools
import math

import numpy as np

DEGREES = 60
# The precise series: its truncation is below this fraction of each element's g (float64 rounds at 1.1e-16).
PRECISE_TRUNCATION = 1e-14
# Rows whose largest |v| is above this take the element-wise closed form (js_from_ratio) instead.
PRECISE_SPREAD = 1.0


@functools.lru_cache(maxsize=8)
def coefficients(weights: tuple[float, float]) -> np.ndarray:
    """a_k, k = 0..60, of g(v) = π2·v·e^v − m·log m, m = π1 + π2·e^v (a_0 = a_1 = 0, a_2 = π1π2/2).

    Examples
    --------
    >>> a = coefficients((0.5, 0.5))
    >>> abs(float(a[0])) < 1e-17, abs(float(a[1])) < 1e-17, round(float(a[2]), 15)
    (True, True, 0.125)
    """
    w_p, w_q = weights
    n = DEGREES + 1
    exp = np.array([1.0 / math.factorial(k) for k in range(n)])
    m = w_q * exp
    m[0] += w_p  # = 1
    log_m = np.zeros(n)  # log m = Σ L_k v^k, L_0 = 0: k·L_k = k·m_k − Σ_{0<j<k} j·L_j·m_(k−j)
    for k in range(1, n):
        log_m[k] = m[k] - sum(j * log_m[j] * m[k - j] for j in range(1, k)) / k
    m_log_m = np.array([sum(m[j] * log_m[k - j] for j in range(k + 1)) for k in range(n)])
    v_exp = np.concatenate([[0.0], exp[:-1]])
    a = w_q * v_exp - m_log_m
    a[:2] = 0.0
    return a


def g(v: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """g(v) in float64 from its closed form, for the constants of the series' bounds (not on the data)."""
    w_p, w_q = weights
    r = np.exp(v)
    m = w_p + w_q * r
    return w_q * r * v - m * np.log(m)


@functools.lru_cache(maxsize=64)
def precise_degree(weights: tuple[float, float], spread: float) -> int:
    """The fewest terms D whose truncation Σ_{k>D} |a_k|·V^(k−2) is below PRECISE_TRUNCATION·min g(v)/v² on |v| ≤ V.

    Examples
    --------
    >>> precise_degree((0.5, 0.5), 0.06) < precise_degree((0.5, 0.5), 1.0) <= DEGREES
    True
    """
    a = np.abs(coefficients(weights))
    spread = max(spread, 1e-6)
    terms = a.copy()
    terms[2:] *= spread ** np.arange(0, DEGREES - 1, dtype=np.float64)
    grid = np.linspace(-spread, spread, 2001)
    grid = grid[np.abs(grid) >= min(1e-3, spread / 2)]  # g/v² loses its digits nearer 0, where it tends to a_2
    gamma = min(float(np.min(g(grid, weights) / grid**2)), float(a[2])) * 0.99
    tail = np.cumsum(terms[::-1])[::-1]  # tail[k] = Σ_{j≥k} terms[j]
    return next((d for d in range(3, DEGREES) if tail[d + 1] <= PRECISE_TRUNCATION * gamma), DEGREES)


def js_by_series(d: np.ndarray, probs_p: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """J = E_p[g(v)] per row, v = −d, d = log(p/q), from g's power series; NaN for rows it does not apply to.

    Applies to rows whose every |d| is finite and at most PRECISE_SPREAD. Each row's degree follows its own
    widest |d| (rounded up to a power of 2^(1/4); rows of the same degree are summed together), to within
    PRECISE_TRUNCATION of each term: a row's value depends on that row alone, however the rows are cut into
    blocks, pieces or workers. Every term p·g(v) ≥ 0, so the sum's float64 rounding is a few units of J
    itself. Horner in d: g(v) = d²·Σ_k a_k·(−1)^k·d^(k−2). Either weight 0 makes J exactly 0.
    """
    rows = d.shape[0]
    with np.errstate(invalid="ignore"):
        spread = np.max(np.abs(d), axis=1)
    fits = np.isfinite(spread) & (spread <= PRECISE_SPREAD)
    result = np.full(rows, np.nan)
    if min(weights) == 0:  # M is one of the sides: J = 0 (the series' coefficients are only rounding there)
        result[fits] = 0.0
        return result
    pair = (float(weights[0]), float(weights[1]))
    degrees = np.zeros(rows, dtype=np.int64)  # each row's own (0: not summed here)
    levels = np.ceil(4 * np.log2(np.maximum(spread[fits], 1e-6)))  # 2^(level/4) ≥ the row's spread
    degrees[fits] = [precise_degree(pair, min(2.0 ** (level / 4), PRECISE_SPREAD)) for level in levels.tolist()]
    for degree in np.unique(degrees[fits]).tolist():  # rows of one degree summed together (usually all)
        index = np.flatnonzero(degrees == degree)
        b = coefficients(pair)[:degree + 1] * (-1.0) ** np.arange(degree + 1)
        x = d if index.size == rows else d[index]
        probs = (probs_p if index.size == rows else probs_p[index]) if probs_p.shape[0] == rows \
            else np.broadcast_to(probs_p, x.shape)
        values = np.empty(x.shape[0])
        step = max(1, PIECE_VALUES // max(1, x.shape[1]))
        for at in range(0, x.shape[0], step):  # a few rows at a time: Horner's passes then run in the cache
            values[at:at + step] = _horner(x[at:at + step], probs[at:at + step], b)
        result[index] = values
    return result


# Rows summed together by the series: 2 MB of float64 (8 rows of 32,000), so its ~2D passes stay in the cache.
PIECE_VALUES = 1 << 18


def _horner(x: np.ndarray, probs: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_i probs_i·x_i²·Σ_k b_k·x_i^(k−2) per row, k = 2..len(b)−1."""
    degree = b.size - 1
    series = np.multiply(x, b[degree])
    for coefficient in b[degree - 1:2:-1]:
        series += coefficient
        series *= x
    series += b[2]
    series *= x
    series *= x
    return np.vecdot(probs, series)
