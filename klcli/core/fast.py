"""``--precision fast``: D(P‖Q) and log-normalisers from float32 logits in float32 arithmetic.

D(P‖Q) is computed *centred*, so that it is a sum of small non-negative terms
whose float32 rounding is relative to the divergence itself (not to log Z,
as a difference of normalisers would be). With w = e^(z_p) (P = w/Z_p),
e = z_q − z_p and any constant c, u = e − c:

    D = log E_p[e^u] − E_p[u] = log1p(S + η) − η,
    S = E_p[t(u)],  t(u) = e^u − 1 − u ≥ 0,  η = E_p[u].

c = E_p[e] (from a float32 pass) makes η ≈ 0; D is stationary in c, so the
centre's rounding enters only at second order. Per block of rows, in
per-thread float32 buffers: w = exp(z_p), Z_p = Σ w, u = z_q − z_p − c, and
S from either

- the direct terms t = expm1(u) − u (one expm1 per element: :func:`expm1`'s
  polynomial where the block's max|u| ≤ 1, NumPy's beyond), or
- for rows whose direct bound would be too loose and whose spread U = max|u|
  is at most MOMENTS_BELOW (0.75): the moments S = Σ_{k=2..D} E_p[u^k]/k!, D ≤ 9 the
  fewest whose truncation U^(D−1)·e^U/(D+1)! is below 1e-7 of E_p[u²] (no
  cancellation at all: small drifts).

Sums over the vocabulary that the result depends on to first order (Z_p and
S, or each moment) are NumPy's pairwise sums of float32 terms, whose error
is at most g·Σ|terms|, g = (20 + log2(n/128))·u, u = 2⁻²⁴.

The bound (:func:`kl_estimate`'s second result), for K = the computed D and
R = √(2K) ≥ Σ|q − p| (Pinsker; it bounds every first-order effect on q):

    rounding of e and u:         u·(2U + |c|)·R
    exp weights (≤ C·u each):    2C·u·S   (S is linear in w; t ≥ 0)
    direct terms (expm1 ≤ C·u):  C·u·(S + |η| + R) + 2u·S + 2g·S
    moments (degree D):          E_p[u²]·((D·u + g)·e^U/2 + U^(D−1)e^U/(D+1)!) + g·S

C = ELEMENT_UNITS = 8 (NumPy's float32 exp and expm1 were measured within
3.5u on this project's machine; other builds are assumed within 4 ulp; for
blocks whose max|u| ≤ 1, :func:`expm1` is a Taylor polynomial, measured within
2.8u). Rows whose bound exceeds RELATIVE·K and
ABSOLUTE, whose sums leave float32's comfortable range (logits above ~85 or
all below ~−69), or that hold a non-finite value are handed back as not
assured: :func:`klcli.core.discrete.kl_rows` recomputes those at full
precision, and reports any invalid value there, with its row. So every row
printed is within RELATIVE (1e-5) of its exact value, or 1e-15 absolute.
Rows that fall back: those with a large shift between the sides and a tiny
divergence (Q = P + 5 + noise of 1e-4: e's rounding, u·5·R, is then 1e-3 of
K), and rows with a few large differences but a tiny divergence.

For token losses (perplexity), :func:`log_normaliser` gives log Z = log Σ e^z
the same way; the loss log Z − z[label] then carries log Z's absolute error.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

_UNIT = float(np.finfo(np.float32).eps) / 2  # u = 2^-24
# The relative error of NumPy's float32 exp and expm1, in units of u: measured at most 3.5 on this project's
# machine (NumPy 2.4, AVX-512, 4M values over |x| < 80); 8 (4 ulp) leaves room for other builds' implementations.
# The polynomial expm1 below (:func:`expm1`) is measured at most 2.8 (tests/core/test_fast_expm1.py).
ELEMENT_UNITS = 8.0
# Rows are assured when their bound is at most RELATIVE of their value (or ABSOLUTE): the 1e-5.
RELATIVE = 1e-5
ABSOLUTE = 1e-15
# Rows whose spread max|u| is at most this take the moments (degree MOMENTS) when the direct terms' bound fails.
MOMENTS_BELOW = 0.75
MOMENTS = 9
# The log-normaliser's estimate (perplexity): ERROR_UNITS·u·(|log Z| + 1), the sums and exponentials each
# carrying a few u of relative error, which the logarithm turns into absolute error.
ERROR_UNITS = 16.0


def sum_units(terms: int) -> float:
    """The error of NumPy's pairwise float32 sum of ``terms`` values, in units of u times Σ|terms|.

    Blocks of 128 summed in 8 lanes (15 additions each, 3 to combine them), then halving: 18 + log2(n/128),
    with 2 to spare.

    Examples
    --------
    >>> sum_units(32000), sum_units(100)
    (28.0, 20.0)
    """
    return 20.0 + float(np.ceil(np.log2(max(terms / 128.0, 1.0))))


def assured(divergence: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """The rows whose bound is within RELATIVE of their value, or within ABSOLUTE."""
    return (bound <= RELATIVE * divergence) | (bound <= ABSOLUTE)


# Stored dtypes whose blocks arrive as float32 (float16 and bfloat16 are widened exactly): the fast kernels' input.
FAST_DTYPES = ("float32", "float16", "bfloat16")


def not_applicable(kind: str, dtype: str, *, temperature: float = 1.0, smoothing: float = 0.0,
                   epsilon: float = 0.0) -> str | None:
    """Why ``--precision fast`` cannot apply to an input read as ``kind`` from ``dtype``; None where it can.

    Examples
    --------
    >>> not_applicable("logits", "float32") is None
    True
    >>> not_applicable("logits", "float64")
    'float64 logits'
    >>> not_applicable("probs", "float32")
    'probabilities'
    """
    if kind != "logits":
        return {"probs": "probabilities", "logprobs": "log-probabilities"}.get(kind, kind)
    if dtype not in FAST_DTYPES:
        return f"{dtype} logits"
    if temperature != 1.0:
        return "--temperature"
    if smoothing:
        return "--label-smoothing"
    if epsilon:
        return "--epsilon"
    return None


def _safe(mass: np.ndarray) -> np.ndarray:
    """Row sums of e^z that keep float32's precision: no overflow, no subnormal terms dominating."""
    return (mass > 1e-30) & (mass < 1e37)


_local = threading.local()
_ones: dict[int, np.ndarray] = {}


def scratch(name: str, shape: tuple[int, int]) -> np.ndarray:
    """A float32 buffer of this thread, reused block after block (no allocation, no page faults)."""
    size = shape[0] * shape[1]
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=np.float32)
    return buffer[:size].reshape(shape)


def _row_of_ones(width: int) -> np.ndarray:
    if width not in _ones:  # shared by the threads, never written
        _ones[width] = np.ones(width, dtype=np.float32)
    return _ones[width]


def centred_difference(p_logits: np.ndarray, q_logits: np.ndarray):
    """The float32 pass every fast kernel starts with, on max-shifted logits (call it under ``np.errstate``).

    Returns P's weights e^{z_p} (as given, and broadcast to the pair's rows), their mass Σ e^{z_p} in float64,
    u = z_q − z_p − c in a scratch buffer, and the centre c = E_p[z_q − z_p] (float32) that was taken off.
    """
    shape = (max(p_logits.shape[0], q_logits.shape[0]), p_logits.shape[1])
    weights = np.exp(p_logits, out=scratch("weights", p_logits.shape))
    mass = np.sum(weights, axis=1).astype(np.float64)
    wide = np.broadcast_to(weights, shape)
    u = np.subtract(q_logits, p_logits, out=scratch("difference", shape))
    centre = (np.vecdot(wide, u) / mass).astype(np.float32)
    u -= centre[:, None]
    return weights, wide, mass, u, centre


def kl_estimate(p_logits: np.ndarray, q_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D(P‖Q) per row from float32 logits, centred, and each row's bound on its absolute error.

    Either side may be a single row, broadcast against the other's rows. The
    bound is ``inf`` for rows that float32 cannot be trusted with (see the
    module's description); their divergence is then meaningless. Each row's
    figures depend on that row and its block's widest spread (the degree of
    :func:`expm1`'s polynomial) alone, so they are the same on every thread count.
    """
    rows, width = max(p_logits.shape[0], q_logits.shape[0]), p_logits.shape[1]
    shape = (rows, width)
    g = sum_units(width) * _UNIT
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        weights, wide, mass, u, centre = centred_difference(p_logits, q_logits)
        spread = np.maximum(np.max(u, axis=1), -np.min(u, axis=1)).astype(np.float64)
        power = np.multiply(wide, u, out=scratch("power", shape))
        eta = np.sum(power, axis=1).astype(np.float64) / mass  # E_p[u] ≈ 0; its rounding is second order
        power *= u
        m2 = np.sum(power, axis=1).astype(np.float64) / mass  # E_p[u²]
        shifts = _UNIT * (2.0 * spread + np.abs(centre.astype(np.float64)))
        # Which rows the direct terms would fail (judged with S ≈ K ≈ m2/2): they take the moments instead.
        guess = m2 / 2.0
        direct_guess = _direct_bound(guess, guess, eta, shifts, g)
        moments = ~assured(guess, direct_guess) & (spread <= MOMENTS_BELOW)
        divergence, bound = np.full(rows, np.nan), np.full(rows, np.inf)
        for chosen in (~moments, moments):
            index = np.flatnonzero(chosen)
            if not index.size:
                continue
            part = slice(None) if index.size == rows else index
            if chosen is moments:
                degree = _degree(float(np.max(spread[part])))
                s = _moments(power[part], u[part], degree) / mass[part]
            else:
                w = wide if index.size == rows else (weights if weights.shape[0] == 1 else weights[index])
                s = _direct(w, u[part], float(np.max(spread[part]))) / mass[part]
            k = np.log1p(s + eta[part]) - eta[part]
            divergence[part] = k
            if chosen is moments:
                bound[part] = _moments_bound(k, s, m2[part], spread[part], shifts[part], g, degree)
            else:
                bound[part] = _direct_bound(k, s, eta[part], shifts[part], g)
        trusted = _safe(mass) & np.isfinite(bound) & np.isfinite(divergence)
    return divergence, np.where(trusted, bound, np.inf)


def _root(divergence: np.ndarray) -> np.ndarray:
    """√(2K) ≥ Σ|q − p| (Pinsker), with a little room for K's own rounding."""
    return np.sqrt(2.0 * np.maximum(divergence, 0.0)) * 1.01


def _direct_bound(divergence, s, eta, shifts, g):
    """The bound of a row whose S comes from the direct terms (see the module's description)."""
    root = _root(divergence)
    return (shifts * root + s * (2.0 * ELEMENT_UNITS * _UNIT + g)  # e and u; the weights; Z's sum
            + ELEMENT_UNITS * _UNIT * (s + np.abs(eta) + root) + s * (2.0 * _UNIT + g))  # expm1; −u, ·w; S's sum


def _truncation(spread, degree: int):
    """|t(u) − Σ_{k≤degree} u^k/k!| ≤ this · u² for |u| ≤ spread."""
    return spread ** (degree - 1) * np.exp(spread) / math.factorial(degree + 1)


def _degree(spread: float) -> int:
    """The fewest moments whose truncation is below 1e-7 of E_p[u²] at this spread (at most MOMENTS)."""
    return next((d for d in range(3, MOMENTS) if _truncation(spread, d) <= 1e-7), MOMENTS)


def _moments_bound(divergence, s, m2, spread, shifts, g, degree: int):
    """The bound of a row whose S comes from the moments up to ``degree`` (see the module's description)."""
    grow = np.exp(spread)
    return (shifts * _root(divergence) + s * (2.0 * ELEMENT_UNITS * _UNIT + g)
            + m2 * ((degree * _UNIT + g) * grow / 2.0 + _truncation(spread, degree)))


# NumPy's float32 expm1 is a scalar loop — 5.5 ns an element on this project's AVX2 machine, against 1.65 ns
# for its vectorised exp and 0.13 ns for a multiply in the cache — so for blocks whose |u| are all ≤ EXPM1_CUT
# the fast kernels take expm1 from its Taylor polynomial by Horner instead, a few rows at a time, within the
# same ELEMENT_UNITS (tests/core/test_fast_expm1.py measures every degree, on dense float32 grids, at 2.8u).
EXPM1_CUT = 1.0
# Horner's steps (here and in fast_js's series) run over pieces of about this many elements, which stay in the
# processor's cache between steps (over a whole block, each step would be a pass over memory).
PIECE = 1 << 15
_EXPM1_TERMS = 0.25 * _UNIT  # the truncation allowed, relative to expm1(u)


@functools.lru_cache(maxsize=128)
def expm1_degree(spread: float) -> int:
    """The fewest Taylor terms D whose truncation V^D·e^V/(D+1)! is below _EXPM1_TERMS for |u| ≤ V = spread.

    (For u > 0 the remainder is at most u^(D+1)·e^u/(D+1)! and expm1(u) ≥ u; for u < 0 it is at most
    |u|^(D+1)/(D+1)! and |expm1(u)| ≥ |u|·e^u.)

    Examples
    --------
    >>> expm1_degree(0.06), expm1_degree(0.6), expm1_degree(1.0)
    (5, 9, 11)
    """
    return next(d for d in range(1, 40)
                if spread**d * math.exp(spread) / math.factorial(d + 1) <= _EXPM1_TERMS)


def expm1(u: np.ndarray, out: np.ndarray, spread: float) -> np.ndarray:
    """expm1(u) of a float32 array into ``out`` (not ``u``), given ``spread`` ≥ max|u| of its elements
    (to a few ulp: the degree's level is a power of 2^(1/4) above it, and the truncation is 0.25u there).

    Where the spread is at most EXPM1_CUT: the Taylor polynomial of degree ``expm1_degree`` (the spread
    rounded up to a power of 2^(1/4), so that blocks of similar spread share it), so each element depends
    on itself and the block's spread alone. Wider blocks (and a NaN or infinite spread): NumPy's expm1 —
    at such spreads the polynomial's degree and the elements beyond the cut would cost as much.
    """
    if not spread <= EXPM1_CUT:
        return np.expm1(u, out=out)
    level = min(2.0 ** (math.ceil(4 * math.log2(max(spread, 2.0**-30))) / 4), EXPM1_CUT)
    coefficients = [np.float32(1.0 / math.factorial(k)) for k in range(expm1_degree(level), 0, -1)]
    flat_u, flat_out = u.reshape(-1), out.reshape(-1)
    for at in range(0, flat_u.size, PIECE):  # pieces that stay in the cache between Horner's steps
        x, t = flat_u[at:at + PIECE], flat_out[at:at + PIECE]
        np.multiply(x, coefficients[0], out=t)
        for coefficient in coefficients[1:]:
            t += coefficient
            t *= x
    return out


def _direct(weights: np.ndarray, u: np.ndarray, spread: float) -> np.ndarray:
    """Σ w·(expm1(u) − u) per row."""
    terms = expm1(u, scratch("terms", u.shape), spread)
    terms -= u
    terms *= weights
    return np.sum(terms, axis=1).astype(np.float64)


def _moments(power: np.ndarray, u: np.ndarray, degree: int) -> np.ndarray:
    """Σ w·t(u) from Σ w·u^k/k!, k = 2..degree, given ``power`` = w·u² (overwritten): no cancellation."""
    total = np.sum(power, axis=1).astype(np.float64) / 2.0
    for k in range(3, degree + 1):
        power *= u
        total += np.sum(power, axis=1).astype(np.float64) / math.factorial(k)
    return total


def log_normaliser(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Σ e^z per row from float32 logits, and its estimated absolute error (``inf`` where not assured)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        weights = np.exp(logits, out=scratch("weights", logits.shape))
        mass = np.vecdot(weights, _row_of_ones(logits.shape[1]))
    # A -inf logit has weight 0 and would pass the sums unseen; the precise kernel reports it.
    trusted = _safe(mass) & np.isfinite(np.min(logits, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mass = np.log(mass.astype(np.float64))
    error = ERROR_UNITS * _UNIT * (np.abs(log_mass) + 1.0)
    return log_mass, np.where(trusted, error, np.inf)
