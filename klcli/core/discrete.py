"""Divergences and entropies between discrete distributions, row by row.

The kernels take :class:`~klcli.core.logspace.LogRows` and return one float64
value per row, in nats. The zero rules are those of SPEC §1: a term with
p = 0 contributes 0 (0·log 0 = 0), and p > 0 where q = 0 makes the row +inf.

The public functions at the bottom take plain arrays, for use from Python.
"""

from __future__ import annotations

import numpy as np

from klcli.core import fast
from klcli.core.logspace import LogRows, as_log_rows, log_ratio, normaliser_error

# Below this |u| = |p/q - 1| the Jensen-Shannon element is summed as a series:
# the closed form loses ~1e-16/|u| of its value to cancellation.
_JS_SERIES_BELOW = 1e-3
# Rows whose closed-form JS is below this (where its few 1e-15 of rounding would be more than 1e-11 of it)
# are summed element by element.
_JS_TINY = 1e-4


def aligned(p: LogRows, q: LogRows) -> tuple[LogRows, LogRows]:
    """Both sides over the same outcomes: a top-K reference side (:mod:`klcli.core.reference`, rows with ``ids``)
    maps the other onto its K tokens and tail. Imported only then, so plain runs import nothing more."""
    if hasattr(p, "ids") or hasattr(q, "ids"):
        from klcli.core.reference import aligned as onto_reference

        return onto_reference(p, q)
    return p, q


def weighted_sum(weights: np.ndarray, values: np.ndarray, mass: np.ndarray | float = 1.0) -> np.ndarray:
    """Σ w·v / mass per row, with 0·(anything) = 0 so that zero-weight terms vanish.

    The common case (no zero weights against infinite values) is one row-wise
    dot product; rows that come out non-finite are redone with the mask.
    Either side may be a single row broadcast against the other's rows.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        result = np.vecdot(weights, values) / mass
    redo = ~np.isfinite(result)
    if redo.any():
        shape = np.broadcast_shapes(weights.shape, values.shape)
        w = np.broadcast_to(weights, shape)[redo]
        with np.errstate(invalid="ignore"):
            terms = w * np.broadcast_to(values, shape)[redo]
        terms[w == 0] = 0.0
        result[redo] = np.sum(terms, axis=1) / np.broadcast_to(mass, shape[:1])[redo]
    return result


def expectation(p: LogRows, values: np.ndarray) -> np.ndarray:
    """E_p[values] per row (see :func:`weighted_sum`)."""
    weights, mass = p.weights()
    return weighted_sum(weights, values, mass)


def refined(divergence: np.ndarray, ratio: np.ndarray, q: LogRows, sign: float = 1.0,
            p: LogRows | None = None) -> np.ndarray:
    """Remove the normaliser's rounding from rows whose divergence is tiny (below 1e-6 nats).

    ``divergence`` is E_p[sign·ratio] with ratio = log(p/q) from ``log_ratio``;
    ``q`` is the distribution in the ratio's denominator when sign is +1 (for
    sign −1, pass the numerator's, as the roles swap).

    Larger rows are already within 1e-9 relative; tiny ones are where CI
    users look for drift, so they get the exact correction (see ``normaliser_error``).
    """
    tiny = np.flatnonzero(np.isfinite(divergence) & (divergence < 1e-6))
    # The correction assumes both sides sum to 1; llama.cpp's quantised rows are used as they are.
    if tiny.size and q.normalised and (p is None or p.normalised):
        shape = np.broadcast_shapes(ratio.shape, (divergence.shape[0], 1))
        ratio_tiny = np.broadcast_to(ratio, shape)[tiny]
        q_tiny = _take_rows(q, tiny)
        divergence[tiny] -= normaliser_error(sign * ratio_tiny, q_tiny)
    if not (q.normalised and (p is None or p.normalised)):
        return divergence  # not a divergence between two distributions: no bound to enforce
    # A KL divergence is ≥ 0 (Gibbs' inequality): anything below is rounding of identical rows.
    return np.maximum(divergence, 0.0, out=divergence)


def _take_rows(rows: LogRows, index: np.ndarray) -> LogRows:
    """A subset of rows (a single broadcast row stays itself)."""
    if rows.rows == 1:
        return rows
    weights, mass = rows.weights()
    return LogRows(rows.shifted[index], rows.offset[index], None if rows.raw is None else rows.raw[index],
                   weights[index], mass[index], rows.normalised)


def kl_rows(p: LogRows, q: LogRows) -> np.ndarray:
    """D(P‖Q) = Σ p log(p/q) per row, in nats."""
    if p.fast and q.fast:
        return _kl_fast(p, q)
    p, q = aligned(_precise(p), _precise(q))  # a top-K reference maps the other side onto its K tokens + tail
    ratio = log_ratio(p, q)
    return refined(expectation(p, ratio), ratio, q, p=p)


def _kl_fast(p: LogRows, q: LogRows) -> np.ndarray:
    """KL in float32 arithmetic (:mod:`klcli.core.fast`), with rows it cannot assure recomputed precisely.

    Rows whose bound exceeds ``fast.RELATIVE`` of their value (see
    :func:`klcli.core.fast.assured`) take the full-precision kernel; the whole
    block is converted then, so that an invalid value is reported with its row.
    """
    divergence, bound = fast.kl_estimate(p.shifted, q.shifted)
    redo = np.flatnonzero(~fast.assured(divergence, bound))
    if redo.size:
        exact = kl_rows(_precise(p), _precise(q))
        divergence[redo] = exact[redo]
    return np.maximum(divergence, 0.0, out=divergence)


def _js_fast(p: LogRows, q: LogRows, weights: tuple[float, float]) -> np.ndarray:
    """JS in float32 arithmetic (:mod:`klcli.core.fast_js`), rows it cannot assure recomputed precisely."""
    from klcli.core import fast_js

    divergence, bound = fast_js.js_estimate(p.shifted, q.shifted, (float(weights[0]), float(weights[1])))
    redo = np.flatnonzero(~fast.assured(divergence, bound))
    if redo.size:  # only those rows converted (a side of one row, broadcast, whole)
        p_exact, q_exact = (rows.precise(redo) if rows.rows > 1 else rows.precise() for rows in (p, q))
        exact = js_rows(p_exact, q_exact, weights)
        divergence[redo] = exact
    return np.maximum(divergence, 0.0, out=divergence)


def _precise(rows: LogRows) -> LogRows:
    """Full-precision rows from ``--precision fast`` ones."""
    return rows.precise() if rows.fast else rows


def entropy_rows(p: LogRows) -> np.ndarray:
    """H(P) = −Σ p log p per row, in nats (log p = shifted − offset, so E_p[shifted] − offset).

    Each term −p log p is ≥ 0 (p ≤ 1), so a sum below 0 is the rounding of a certain row: it is 0.
    """
    return np.maximum(p.offset - expectation(p, p.shifted), 0.0)


def cross_entropy_rows(p: LogRows, q: LogRows) -> np.ndarray:
    """H(P, Q) = −Σ p log q per row, in nats; +inf where p > 0 = q."""
    return q.offset - expectation(p, q.shifted)


def js_rows(p: LogRows, q: LogRows, weights: tuple[float, float] = (0.5, 0.5), *,
            probs: tuple[np.ndarray, np.ndarray] | None = None,
            p_entropy: np.ndarray | None = None, ratio: np.ndarray | None = None,
            p_probs: np.ndarray | None = None, at_most: np.ndarray | None = None) -> np.ndarray:
    """Weighted Jensen–Shannon divergence π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q.

    Computed first as H(M) − π1·H(P) − π2·H(Q), one logarithm per element,
    whose absolute error is a few 1e-15. Rows below 1e-4 nats — where that
    would be a visible fraction — are recomputed element by element, as a sum
    of non-negative terms where every |log(q/p)| ≤ 1 (:func:`_tiny_js`), so nearly identical rows give
    their true, tiny divergence rather than rounding noise. The result is
    clamped at 0 so that its square root (the JS distance) is never NaN
    (compare scipy issue #20083). ``probs`` passes both sides' probabilities,
    ``p_entropy`` H(P), ``ratio`` log(p/q) (:func:`log_ratio` of the pair) and
    ``p_probs`` P's probabilities, when the caller already has them (compare's
    base, shared by its candidates, and its log-ratio). ``at_most`` is an upper
    bound on each row's JS (compare's π1π2·(D(P‖Q) + D(Q‖P)), by the convexity
    of D in its second argument): rows it puts below 1e-4 skip the closed form.
    """
    if p.fast and q.fast:
        return _js_fast(p, q, weights)
    p, q = _precise(p), _precise(q)
    w_p, w_q = weights
    p, q = aligned(p, q)  # a top-K reference maps the other side onto its K tokens + tail
    rows = max(p.rows, q.rows)
    known_tiny = np.zeros(rows, dtype=bool) if at_most is None else at_most < _JS_TINY * (1 - 1e-6)
    if known_tiny.all():  # nearly identical rows (compare's small drifts): no closed form to discard
        return np.maximum(_tiny_js(p, q, np.arange(rows), weights, ratio, p_probs), 0.0)
    entropies = w_p * (entropy_rows(p) if p_entropy is None else p_entropy) + w_q * entropy_rows(q)
    divergence = mixture_entropy(p, q, weights, probs) - entropies
    tiny = np.flatnonzero(~(divergence >= _JS_TINY) | known_tiny)
    if tiny.size:
        divergence[tiny] = _tiny_js(p, q, tiny, weights, ratio, probs[0] if probs is not None else p_probs)
    return np.maximum(divergence, 0.0)


def _tiny_js(p: LogRows, q: LogRows, tiny: np.ndarray, weights: tuple[float, float],
             ratio: np.ndarray | None, p_probs: np.ndarray | None) -> np.ndarray:
    """JS of the rows ``tiny`` element by element: g's power series where every |log(p/q)| ≤ 1
    (:func:`klcli.core.js_series.js_by_series`, a sum of non-negative terms), :func:`js_from_ratio` elsewhere.
    ``ratio`` (log(p/q) of every row) and ``p_probs`` are the caller's, when it has them."""
    from klcli.core.js_series import js_by_series

    rows, width = max(p.rows, q.rows), p.shifted.shape[1]
    every = tiny.size == rows
    p_tiny, q_tiny = (p, q) if every else (_take_rows(p, tiny), _take_rows(q, tiny))
    if ratio is None or ratio.shape != (rows, width):
        d = log_ratio(p_tiny, q_tiny)
    else:
        d = ratio if every else ratio[tiny]
    if p_probs is None or p_probs.shape != (p.rows, width):
        probs_p = p_tiny.probs()
    else:
        probs_p = p_probs if every or p.rows == 1 else p_probs[tiny]
    result = js_by_series(d, probs_p, weights)
    rest = np.flatnonzero(np.isnan(result))
    if rest.size:
        d_rest = d[rest]
        result[rest] = js_from_ratio(d_rest, np.broadcast_to(probs_p, d.shape)[rest],
                                     np.broadcast_to(q_tiny.probs(), d.shape)[rest], weights)
    return result


def mixture_entropy(p: LogRows, q: LogRows, weights: tuple[float, float],
                    probs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """H(M) per row for M = π1·P + π2·Q.

    From the unnormalised weights, M = a·U with U = weights_p + r·weights_q,
    a = π1/Z_p and r = π2·Z_p/(π1·Z_q): one scaling pass instead of two, and
    H(M) = −a·Σ U log U − log(a)·Σ M. Where Z_p or r is far from 1 (weights
    near 0, logits in the hundreds) U could over- or underflow; M is then
    formed from both normalised sides.
    """
    w_p, w_q = weights
    if probs is None and w_p > 0 and w_q > 0:
        weights_p, mass_p = p.weights()
        weights_q, mass_q = q.weights()
        scale = w_p / mass_p
        with np.errstate(over="ignore", divide="ignore"):
            ratio = w_q / (mass_q * scale)
        # U ≤ Z_p·(1 + π2/π1) < 1e300, and its terms that matter (≥ 1e-17·Z_p·min(1, r)) are normal numbers.
        if np.all((mass_p > 1e-100) & (mass_p < 1e200) & (ratio > 1e-100) & (ratio < 1e100)):
            mixture = np.multiply(weights_q, ratio[:, None])
            mixture += weights_p
            total = scale * (mass_p + ratio * mass_q)  # Σ M: 1 to rounding
            with np.errstate(divide="ignore"):
                log_mixture = np.log(mixture)
                return -scale * weighted_sum(mixture, log_mixture) - np.log(scale) * total
    if probs is None:
        probs = (p.probs(), q.probs())
    mixture = w_p * probs[0] + w_q * probs[1]
    with np.errstate(divide="ignore"):
        return -weighted_sum(mixture, np.log(mixture))


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
    # A side of weight 0 contributes 0·D = 0, even where its D(·‖M) is infinite (weights 1,0 or 0,1: M is the other).
    elements = (w_p * p_terms if w_p else 0.0) + (w_q * q_terms if w_q else np.zeros_like(q_terms))
    u = np.expm1(clipped)
    near = np.abs(u) < _JS_SERIES_BELOW
    if near.any():
        # Σ_{n=2..6} (−1)^n (π1 − π1^n)/(n(n−1)) u^n (five terms: the next is below 1e-15 of the first), by Horner
        # over whole rows: nearly identical rows (or tied ones) have every element near, and gathering them or
        # raising to powers cost 30 times the rest of the kernel.
        coefficients = [((-1) ** n) * (w_p - w_p**n) / (n * (n - 1)) for n in range(2, 7)]
        series = np.full_like(u, coefficients[-1])
        for coefficient in reversed(coefficients[:-1]):
            series *= u
            series += coefficient
        series *= u
        series *= u
        series *= probs_q
        np.copyto(elements, series, where=near)
    return np.maximum(np.sum(elements, axis=1), 0.0)


# --- the Python API: plain arrays in, per-row arrays out -------------------


def _pair(p, q, kind: str) -> tuple[LogRows, LogRows]:
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
