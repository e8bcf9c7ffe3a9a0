"""Divergences and entropies between discrete distributions, row by row.

The kernels take :class:`~klcli.core.logspace.LogRows` and return one float64
value per row, in nats. The zero rules are those of SPEC §1: a term with
p = 0 contributes 0 (0·log 0 = 0), and p > 0 where q = 0 makes the row +inf.

The public functions at the bottom take plain arrays, for use from Python.
"""

from __future__ import annotations

import numpy as np

from klcli.core.logspace import LogRows, as_log_rows, log_ratio

# Below this |u| = |p/q - 1| the Jensen-Shannon element is summed as a series:
# the closed form loses ~1e-16/|u| of its value to cancellation.
_JS_SERIES_BELOW = 1e-3


def _weighted_sum(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Σ w·v per row, with 0·(anything) = 0 so that zero-weight terms vanish.

    Either side may be a single row broadcast against the other's rows.
    """
    with np.errstate(invalid="ignore"):
        terms = weights * values
    terms[np.broadcast_to(weights == 0, terms.shape)] = 0.0
    return np.sum(terms, axis=1)


def kl_rows(p: LogRows, q: LogRows) -> np.ndarray:
    """D(P‖Q) = Σ p log(p/q) per row, in nats."""
    return _weighted_sum(p.probs(), log_ratio(p, q))


def entropy_rows(p: LogRows) -> np.ndarray:
    """H(P) = −Σ p log p per row, in nats."""
    return -_weighted_sum(p.probs(), p.log_probs())


def cross_entropy_rows(p: LogRows, q: LogRows) -> np.ndarray:
    """H(P, Q) = −Σ p log q per row, in nats; +inf where p > 0 = q."""
    return -_weighted_sum(p.probs(), q.log_probs())


def js_rows(p: LogRows, q: LogRows, weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Weighted Jensen–Shannon divergence π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q.

    Each element is written through u = p/q − 1 so that nearly identical rows
    give their true, tiny divergence rather than rounding noise: for |u| small
    the element q·g(u) is summed from its Taylor series
    g(u) = Σₙ₌₂ (−1)ⁿ (π1 − π1ⁿ) uⁿ / (n(n−1)).
    The result is clamped at 0 so that its square root (the JS distance) is
    never NaN (compare scipy issue #20083).
    """
    d = log_ratio(p, q)
    return js_from_ratio(d, np.broadcast_to(p.probs(), d.shape), np.broadcast_to(q.probs(), d.shape), weights)


def js_from_ratio(d: np.ndarray, probs_p: np.ndarray, probs_q: np.ndarray,
                  weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """The weighted JS divergence per row from d = log(p/q) and both probability rows (see :func:`js_rows`)."""
    w_p, w_q = weights
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # log(p/m) = −log1p(π2·(q/p − 1)),  log(q/m) = −log1p(π1·(p/q − 1)).
        # Clipping d at ±700 only touches terms weighted by e^-700 or less.
        clipped = np.clip(d, -700.0, 700.0)
        log_p_over_m = -np.log1p(w_q * np.expm1(-clipped))
        log_q_over_m = -np.log1p(w_p * np.expm1(clipped))
        p_terms = probs_p * log_p_over_m
        q_terms = probs_q * log_q_over_m
    p_terms[probs_p == 0] = 0.0
    q_terms[probs_q == 0] = 0.0
    elements = w_p * p_terms + w_q * q_terms
    u = np.expm1(clipped)
    near = np.abs(u) < _JS_SERIES_BELOW
    if near.any():
        u_near = u[near]
        series = np.zeros_like(u_near)
        for n in range(2, 7):  # five terms: the next is below 1e-15 of the first
            series += ((-1) ** n) * (w_p - w_p**n) / (n * (n - 1)) * u_near**n
        elements[near] = probs_q[near] * series
    return np.maximum(np.sum(elements, axis=1), 0.0)


# --- the Python API: plain arrays in, per-row arrays out -------------------


def _pair(p, q, kind: str):
    p_rows = as_log_rows(np.atleast_2d(np.asarray(p, dtype=np.float64)), kind, label="P")
    q_rows = as_log_rows(np.atleast_2d(np.asarray(q, dtype=np.float64)), kind, label="Q")
    return p_rows, q_rows


def kl_divergence(p, q, *, kind: str = "probs") -> np.ndarray:
    """Kullback–Leibler divergence D(P‖Q) per row, in nats.

    Parameters
    ----------
    p, q : array_like, shape (outcomes,) or (rows, outcomes)
        Distributions of the given kind; a single row broadcasts.
    kind : {'probs', 'logprobs', 'logits'}

    Returns
    -------
    ndarray, shape (rows,)

    Examples
    --------
    >>> kl_divergence([0.5, 0.5], [0.9, 0.1]).tolist()  # log(5/3)
    [0.5108256237659907]
    >>> kl_divergence([1.0, 0.0], [0.5, 0.5]).tolist()  # log 2; 0·log 0 = 0
    [0.6931471805599453]
    >>> kl_divergence([0.5, 0.5], [1.0, 0.0]).tolist()
    [inf]
    """
    return kl_rows(*_pair(p, q, kind))


def cross_entropy(p, q, *, kind: str = "probs") -> np.ndarray:
    """Cross-entropy H(P, Q) = −Σ p log q per row, in nats.

    Examples
    --------
    >>> cross_entropy([0.5, 0.5], [0.25, 0.75]).round(12).tolist()  # ½ln4 + ½ln(4/3)
    [0.836988216786]
    """
    return cross_entropy_rows(*_pair(p, q, kind))


def entropy(p, *, kind: str = "probs") -> np.ndarray:
    """Shannon entropy H(P) = −Σ p log p per row, in nats.

    Examples
    --------
    >>> entropy([0.25, 0.25, 0.25, 0.25]).tolist()  # log 4
    [1.3862943611198906]
    """
    return entropy_rows(as_log_rows(np.atleast_2d(np.asarray(p, dtype=np.float64)), kind, label="P"))


def js_divergence(p, q, *, kind: str = "probs", weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Jensen–Shannon divergence per row, in nats; its square root is the JS distance.

    Examples
    --------
    >>> js_divergence([1.0, 0.0], [0.0, 1.0]).tolist()  # the maximum, log 2
    [0.6931471805599453]
    >>> js_divergence([0.3, 0.7], [0.3, 0.7]).tolist()
    [0.0]
    """
    return js_rows(*_pair(p, q, kind), weights=weights)
