"""``--precision fast`` for the Jensen–Shannon divergence: float32 arithmetic, a bound relative to each row's JS.

With r = q/p and M/P = π1 + π2·r, the weighted JS divergence is

    J = E_p[g],   g = π2·r·log r − (π1 + π2·r)·log(π1 + π2·r) ≥ 0,

a sum of non-negative terms (g is convex in r, zero with its slope at r = 1), each computed in float32
to a few units of its own value, so the sum's rounding is relative to J itself (no cancellation). As in
:mod:`klcli.core.fast`, u = z_q − z_p − c (c ≈ E_p[z_q − z_p]) and v = u − L, L = log E_p[e^u] =
log1p(E_p[expm1(u)]), so that r = e^v. Each element's g is

- for |v| ≤ V = min(the block's largest spread max|v|, SERIES_BELOW = 1.5): the power series
  Σ_{k=2..D} a_k·v^k by Horner (its radius is at least π), D ≤ SERIES the fewest whose truncation
  T(V) = Σ_{k>D} |a_k|·V^(k−2) is below 1e-8·a_2;
- for |v| > V (a few elements of rows wider than 1.5): the direct terms
  g = π1·h(π2·(r − 1)) + π2·r·h(π1·(1/r − 1)), h(x) = x − log(1 + x) ≥ 0, whose relative error is at
  most κ·u there (:func:`direct_units`, evaluated over V ≤ |v| ≤ 20).

The bound (the second result of :func:`js_estimate`), with R = √(2J/(π1π2)) ≥ Σ|q − p| (Pinsker on both
halves) and |dg/dv| ≤ π1·|r − 1| (a rounding δ_i of each v_i moves J by at most Σ p·π1·|r − 1|·δ_i), and
|dJ/dL| = π2·D(Q‖M) ≤ J (a shift of L moves J relative to itself):

    rounding of e, u, v:    u·(3ρ·J + π1·R·(3|L| + |c|))   (each v_i to u·(3|v_i| + 3|L| + |c|))
    L:                      J·δL + δL²·e^U,  δL = ((C + 1)·u·B + g·(B + |X|)) / (1 + X) + C·u·R + u·|L|
    each element's g:       J_near·(T(V) + 1.1·u·(2·A'(V) + 3·A(V)))/γ(V) + J_far·κ·u + J·(2C·u + g)

with U the row's max|u|, X = E_p[e^u − 1] (L = log1p(X)), B = e^L·R + |e^L − 1| ≥ E_p|e^u − 1|,
C·u·R the weights' shift of L (E_q[ε] − E_p[ε]), ρ = max over |v| ≤ V of
π1·|r − 1|·|v|/g(v) (:func:`slope_units`), J_near and J_far the parts of J from the series' and the
direct terms' elements, A(V) = Σ |a_k|·V^(k−2),
A'(V) = Σ (k−1)·|a_k|·V^(k−2) (Horner's rounding at step k is multiplied by v^k), γ(V) = min over
|v| ≤ V of g(v)/v², C = ELEMENT_UNITS (8), and g the pairwise sum's units, as in :mod:`klcli.core.fast`.
Rows whose bound exceeds RELATIVE (1e-5) of their J and ABSOLUTE (1e-15), whose sums leave float32's
range, or that hold a non-finite value are not assured: the caller recomputes them at full precision.
The coefficients a_k are computed once per weight pair in float64 (power-series arithmetic on e^v and
log(π1 + π2·e^v)) to degree 60: past it, terms are below 1e-24 of a_2 for V ≤ 1.5. Rows that fall back:
the hard case (Q = P + 5 + noise 1e-4: e's rounding, u·5·R, is then 1e-2 of J), as for
kl, and either weight 0 (J is 0 there, the precise kernel says so).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from klcli.core import fast
from klcli.core.fast import _UNIT, ELEMENT_UNITS, PIECE, scratch, sum_units
from klcli.core.js_series import DEGREES as _DEGREES
from klcli.core.js_series import coefficients
from klcli.core.js_series import g as _g

SERIES_BELOW = 1.5
SERIES = 24


# compare's KL both ways from the same v (r = e^v, E_p[r] = 1), each a sum of non-negative terms:
# D(P‖Q) = E_p[e^v − 1 − v] (coefficients 1/k!), D(Q‖P) = E_p[v·e^v − e^v + 1] (coefficients (k−1)/k!).
_KL = {"kl": (np.array([0.0, 0.0] + [1.0 / math.factorial(k) for k in range(2, _DEGREES + 1)]),
              lambda v: np.expm1(v) - v),
       "kl_reverse": (np.array([0.0, 0.0] + [(k - 1.0) / math.factorial(k) for k in range(2, _DEGREES + 1)]),
                      lambda v: 1.0 + (v - 1.0) * np.exp(v))}


def _function(name: str, weights: tuple[float, float]):
    """(coefficients, g in float64) of "js" (at ``weights``), "kl" or "kl_reverse"."""
    if name == "js":
        return coefficients(weights), lambda v: _g(v, weights)
    return _KL[name]


@functools.lru_cache(maxsize=64)
def plan(weights: tuple[float, float], spread: float, name: str = "js") -> tuple[int, float]:
    """(D, the relative error of each element's g) for a block whose largest spread is ``spread``."""
    cut = min(max(spread, 1e-3), SERIES_BELOW)
    a_signed, function = _function(name, weights)
    a = np.abs(a_signed)
    powers = np.zeros(_DEGREES + 1)
    powers[2:] = cut ** np.arange(0, _DEGREES - 1, dtype=np.float64)
    terms = a * powers
    degree = next((d for d in range(3, SERIES) if np.sum(terms[d + 1:]) <= 1e-8 * a[2]), SERIES)
    truncation, absolute = float(np.sum(terms[degree + 1:])), float(np.sum(terms[:degree + 1]))
    grid = np.linspace(-cut, cut, 4001)
    grid = grid[grid != 0.0]
    gamma = float(np.min(function(grid) / grid**2)) * 0.99
    # Horner's rounding: step k's (≤ 2u of its partial sum t_k ≈ Σ_{j≥k} a_j·v^(j−k)) is multiplied by
    # v^k; with the coefficients' own rounding and the two last products: u·v²·(2·Σ (j−1)|a_j|V^(j−2) + 3A).
    weighted = float(np.sum((np.arange(_DEGREES + 1) - 1)[:degree + 1] * terms[:degree + 1]))
    series = (truncation + 1.1 * _UNIT * (2.0 * weighted + 3.0 * absolute)) / gamma
    return degree, series


@functools.lru_cache(maxsize=64)
def slope_units(weights: tuple[float, float], spread: float) -> float:
    """ρ: max over |v| ≤ spread of π1·|r − 1|·|v| / g(v), so that Σ p·|dg/dv|·|v| ≤ ρ·J."""
    w_p = weights[0]
    v = np.linspace(-max(spread, 1e-3), max(spread, 1e-3), 8001)
    v = v[v != 0.0]
    return float(np.max(w_p * np.abs(np.expm1(v) * v) / _g(v, weights))) * 1.01


@functools.lru_cache(maxsize=64)
def direct_units(weights: tuple[float, float], cut: float) -> float:
    """κ: the direct terms' error, in units of u of their own value, over |v| from ``cut`` to 20.

    Per side, h(x) = x − log(1 + x) with x to a relative ε_x (r's C, then the subtraction of 1, at most
    e/(e − 1) < 2 times as much for |v| ≥ 1, the product): ε_x·x²/|1+x| (x's error through h'),
    C·|log(1 + x)| + 1 (log's own, and 1 + x's rounding) and |h| (the subtraction); then the products
    by π and by r. Beyond |v| = 20 the weights (e^z ≤ e^-20 of the row's largest, or r) leave such
    terms negligible.
    """
    w_p, w_q = weights
    c = ELEMENT_UNITS
    v = np.concatenate([-np.geomspace(cut, 20.0, 2000), np.geomspace(cut, 20.0, 2000)])
    r = np.exp(v)
    x_p, x_q = w_q * np.expm1(v), w_p * np.expm1(-v)
    h_p, h_q = x_p - np.log1p(x_p), x_q - np.log1p(x_q)
    # In units of u: x's error through h' = x/(1+x), log1p's own, the subtraction and the products.
    error_p = (2 * c + 2.0) * x_p**2 / np.abs(1 + x_p) + c * np.abs(np.log1p(x_p)) + 1.0 + 2.0 * h_p
    error_q = (2 * c + 3.0) * x_q**2 / np.abs(1 + x_q) + c * np.abs(np.log1p(x_q)) + 1.0 + (c + 4.0) * h_q
    total = w_p * error_p + w_q * r * error_q
    value = w_p * h_p + w_q * r * h_q
    return float(np.max(total / value + 1.0)) * 1.1




def js_estimate(p_logits: np.ndarray, q_logits: np.ndarray,
                weights: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """The weighted JS divergence per row from float32 logits, and each row's bound on its absolute error.

    Either side may be a single row, broadcast. The bound is ``inf`` where float32 cannot be trusted (see
    the module's description). Each row's figures depend on that row and its block's largest spread (the
    series' degree) alone, so they are the same on every thread count.
    """
    divergence, bound, _, _ = js_tv_estimate(p_logits, q_logits, weights, total_variation=False)
    return divergence, bound


@functools.lru_cache(maxsize=64)
def kl_units(name: str, spread: float, cut: float) -> tuple[float, float, float]:
    """For compare's KL terms t: (ρ = max over |v| ≤ spread of |t'(v)|·|v|/t(v); the direct terms' error in
    units of u of their value over cut ≤ |v| ≤ 20; the same ρ for the rounding's constant part, as
    Σ p·|t'|·(3|L| + |c|) ≤ (3|L| + |c|)·ρ1·… — see :func:`js_tv_estimate`)."""
    c = ELEMENT_UNITS
    v = np.linspace(-max(spread, 1e-3), max(spread, 1e-3), 8001)
    v = v[v != 0.0]
    far = np.concatenate([-np.geomspace(cut, 20.0, 2000), np.geomspace(cut, 20.0, 2000)])
    r, r_far = np.exp(v), np.exp(far)
    if name == "kl":  # t = expm1(v) − v, t' = r − 1
        t, slope = np.expm1(v) - v, np.abs(np.expm1(v))
        t_far = np.expm1(far) - far
        error = c * np.abs(np.expm1(far)) + 2.0 * t_far + np.abs(far)
    else:  # t = v·r − r + 1, t' = v·r
        t, slope = 1.0 + (v - 1.0) * r, np.abs(v) * r
        t_far = 1.0 + (far - 1.0) * r_far
        error = (c + 2.0) * (np.abs(far) + 1.0) * r_far + 2.0 * (t_far + 1.0)
    return (float(np.max(slope * np.abs(v) / t)) * 1.01, float(np.max(error / t_far)) * 1.1,
            float(np.max(slope**2 / t)) * 1.01)


def js_tv_estimate(p_logits: np.ndarray, q_logits: np.ndarray, weights: tuple[float, float] = (0.5, 0.5), *,
                   total_variation: bool = True, kl: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """JS and its bound (:func:`js_estimate`), and the total variation ½·Σ|p − q| = ½·E_p|expm1(v)| and its.

    TV is a sum of non-negative terms too (one more expm1 per element): its bound is
    TV·((C + 2)·u + 2C·u + g) (the terms, the weights, the sum) + u·(1 + V)·3·2TV (each v_i's rounding,
    as r·|v| ≤ (1 + V)·|r − 1|) + u·(3|L| + |c|) + δL/2 (a shift of every v moves TV by at most ½ E_p[r]).
    Without ``total_variation`` the last two results are None. A ``kl`` dict receives compare's
    ``"kl"`` and ``"kl_reverse"`` as (value, bound) from the same v: the series (or direct terms) of
    t = e^v − 1 − v and v·e^v − e^v + 1, bounded as JS is (per element; the rounding of each v_i,
    Σ p·|t'|·δ_i ≤ u·(3ρ·K + (3|L| + |c|)·√(ρ1·K)) by Cauchy–Schwarz, ρ1 = max t'²/t; L at second
    order for D(P‖Q), as E_p[r − 1] = 0, and as K·δL for D(Q‖P), as E_p[v·r] = D(Q‖P)).
    """
    w_p, w_q = weights
    rows, width = max(p_logits.shape[0], q_logits.shape[0]), p_logits.shape[1]
    shape = (rows, width)
    g = sum_units(width) * _UNIT
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        _, wide, mass, u, centre = fast.centred_difference(p_logits, q_logits)
        # The sums J depends on to first order are NumPy's pairwise sums (their error is g·Σ|terms|);
        # only the centre, to which the result is stationary, is a dot product.
        spread_u = np.maximum(np.max(u, axis=1), -np.min(u, axis=1)).astype(np.float64)
        changes = fast.expm1(u, scratch("power", shape), _widest(spread_u))
        changes *= wide
        mean_change = np.sum(changes, axis=1).astype(np.float64) / mass  # X = E_p[e^u − 1]
        log_mean = np.log1p(mean_change)  # L
        u -= log_mean.astype(np.float32)[:, None]  # v = u − L
        spread = spread_u + np.abs(log_mean)
        finite = np.isfinite(spread)
        widest = math.ceil((float(np.max(spread[finite])) if finite.any() else 0.0) * 64.0) / 64.0
        cut = min(max(widest, 1e-3), SERIES_BELOW)
        degree, relative = plan(weights, widest)
        terms = _series(u, coefficients(weights)[:degree + 1])
        far_part = np.zeros(rows)
        if widest > cut:
            where = np.nonzero(np.abs(u) > cut)
            direct = _direct(u[where], w_p, w_q)
            terms[where] = direct
            far_part = np.bincount(where[0], weights=direct * wide[where], minlength=rows) / mass
        terms *= wide
        divergence = np.sum(terms, axis=1).astype(np.float64) / mass
        own = relative * np.abs(divergence - far_part) + direct_units(weights, cut) * _UNIT * far_part
        root = np.sqrt(2.0 * np.maximum(divergence, 0.0) / (w_p * w_q)) * 1.01 if w_p * w_q > 0 else divergence
        # L's error against log E_p̂[e^û] of the rounded weights and u (their own rounding is counted apart:
        # per element, and as C·u·R, the weights' shift E_q[ε] − E_p[ε] of L): X's terms and sums.
        spread_change = np.exp(log_mean) * root + np.abs(np.expm1(log_mean))  # ≥ E_p|e^u − 1|
        x_error = (ELEMENT_UNITS + 1) * _UNIT * spread_change + g * (spread_change + np.abs(mean_change))
        shift = x_error / (1.0 + mean_change) + ELEMENT_UNITS * _UNIT * root + _UNIT * np.abs(log_mean)
        level = np.abs(log_mean)
        bound = (_UNIT * (3.0 * slope_units(weights, widest) * divergence
                          + w_p * root * (3.0 * level + np.abs(centre.astype(np.float64))))
                 + divergence * shift + shift**2 * np.exp(np.minimum(spread_u, 700.0))
                 + own + divergence * (2 * ELEMENT_UNITS * _UNIT + 2 * g))
        trusted = fast._safe(mass) & np.isfinite(bound) & np.isfinite(divergence) & (w_p > 0) & (w_q > 0)
        tv = tv_bound = None
        if total_variation:
            changes = fast.expm1(u, terms, _widest(spread) * (1 + 4 * _UNIT))  # v = u − L: rounded, a few ulp
            np.abs(changes, out=changes)
            changes *= wide
            tv = 0.5 * np.sum(changes, axis=1).astype(np.float64) / mass
            tv_bound = (tv * ((3 * ELEMENT_UNITS + 2) * _UNIT + 2 * g + 6 * _UNIT * (1.0 + spread))
                        + _UNIT * (3.0 * level + np.abs(centre.astype(np.float64))) + shift / 2.0)
            tv_bound = np.where(fast._safe(mass) & np.isfinite(tv_bound) & np.isfinite(tv), tv_bound, np.inf)
        if kl is not None:
            for name in ("kl", "kl_reverse"):
                kl[name] = _kl_from_v(name, u, wide, mass, widest, cut, g, level, centre, shift, spread_u)
    return divergence, np.where(trusted, bound, np.inf), tv, tv_bound


def _widest(spread: np.ndarray) -> float:
    """The largest of the rows' spreads max|u| (inf if one is not finite: expm1 then goes element by element)."""
    return float(np.max(spread)) if spread.size else 0.0


def _kl_from_v(name, v, wide, mass, widest, cut, g, level, centre, shift, spread_u):
    """One KL direction and its bound from v (see :func:`js_tv_estimate`)."""
    degree, relative = plan((0.5, 0.5), widest, name)
    terms = _series(v, _KL[name][0][:degree + 1])
    far_part = np.zeros(v.shape[0])
    rho, kappa, rho1 = kl_units(name, widest, cut)
    if widest > cut:
        where = np.nonzero(np.abs(v) > cut)
        x = v[where]
        direct = np.expm1(x) - x if name == "kl" else np.float32(1.0) + (x - np.float32(1.0)) * np.exp(x)
        terms[where] = direct
        far_part = np.bincount(where[0], weights=direct * wide[where], minlength=v.shape[0]) / mass
    terms *= wide
    value = np.sum(terms, axis=1).astype(np.float64) / mass
    positive = np.maximum(value, 0.0)
    sensitivity = shift * positive if name == "kl_reverse" else 0.0
    bound = (relative * np.abs(value - far_part) + kappa * _UNIT * far_part
             + positive * (2 * ELEMENT_UNITS * _UNIT + 2 * g)
             + _UNIT * (3.0 * rho * positive + (3.0 * level + np.abs(centre.astype(np.float64)))
                        * np.sqrt(rho1 * positive))
             + sensitivity + shift**2 * np.exp(np.minimum(spread_u, 700.0)))
    trusted = fast._safe(mass) & np.isfinite(bound) & np.isfinite(value)
    return value, np.where(trusted, bound, np.inf)


def _series(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Σ_{k=2..D} a_k·v^k per element, by Horner in float32 (a buffer of this thread)."""
    terms = scratch("terms", v.shape)
    step = max(1, PIECE // max(1, v.shape[1]))
    top, rest = np.float32(a[-1]), [np.float32(c) for c in a[-2:1:-1]]
    for at in range(0, v.shape[0], step):
        x, t = v[at:at + step], terms[at:at + step]
        np.multiply(x, top, out=t)
        for coefficient in rest:
            t += coefficient
            t *= x
        t *= x
    return terms


def _direct(v: np.ndarray, w_p: float, w_q: float) -> np.ndarray:
    """π1·h(π2·(r − 1)) + π2·r·h(π1·(1/r − 1)) per element, r = e^v, h(x) = x − log(1 + x) (float32).

    Only for |v| > SERIES_BELOW (1.5): there r − 1 and 1/r − 1 are at least 1 − 1/e^1.5 in size, so forming them
    from r, and log(1 + x) rather than log1p(x), cost a few units of their own value (:func:`direct_units`),
    and exp, log and division are the vectorised ones.
    """
    r = np.exp(v)
    x = r - np.float32(1.0)
    x *= np.float32(w_q)
    total = x - np.log(x + np.float32(1.0))
    total *= np.float32(w_p)  # π1·h(π2·(r − 1))
    x_q = np.float32(1.0) / r
    x_q -= np.float32(1.0)
    x_q *= np.float32(w_p)
    other = x_q - np.log(x_q + np.float32(1.0))
    other *= r
    other *= np.float32(w_q)
    total += other
    return total
