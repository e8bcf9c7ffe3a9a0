"""``--precision fast``: D(P‖Q) and log-normalisers from float32 logits in float32 arithmetic.

One pass per side and no float64 temporaries: for D(P‖Q), per block of rows,

    e = exp(z_p)                  (into a per-thread buffer)
    Z_p = Σ e,  E = Σ e·(z_p − z_q) / Z_p
    Z_q = Σ exp(z_q)              (into the same buffer)
    D = E − log Z_p + log Z_q

with the sums taken as row-wise dot products (with a row of ones for Z).
No max-shift is made: rows whose sums leave float32's comfortable range
(logits above ~85 or all below ~-69), or hold a non-finite value, are
handed back as not assured, as are rows whose estimated error is too large
for their value (nearly identical rows above all, where float32 would print
rounding noise). :func:`klcli.core.discrete.kl_rows` recomputes those at full
precision, and reports any invalid value there, with its row.

For token losses (perplexity), :func:`log_normaliser` gives log Z = log Σ e^z
the same way; the loss log Z − z[label] then carries log Z's absolute error.
"""

from __future__ import annotations

import threading

import numpy as np

# u = 2^-24 (float32's unit roundoff). A row's error is estimated as ERROR_UNITS·u·(|log Z_p| + |log Z_q|
# + |E| + 1): the sums and the exponentials each carry a few u of relative error, which the logarithms
# turn into absolute error. It exceeded the largest measured error about 70-fold on the benchmark's data.
ERROR_UNITS = 16.0
# Rows whose estimate exceeds this fraction of their value are recomputed at full precision.
RELATIVE = 1e-3
_UNIT = float(np.finfo(np.float32).eps) / 2  # u = 2^-24


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


def kl_estimate(p_logits: np.ndarray, q_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D(P‖Q) per row from float32 logits, and each row's estimated absolute error.

    Either side may be a single row, broadcast against the other's rows. The
    error is ``inf`` for rows that float32 cannot be trusted with (see the
    module's description); their divergence is then meaningless.
    """
    rows = max(p_logits.shape[0], q_logits.shape[0])
    ones = _row_of_ones(p_logits.shape[1])
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        weights = np.exp(p_logits, out=scratch("weights", p_logits.shape))
        mass_p = np.vecdot(weights, ones)
        difference = np.subtract(p_logits, q_logits, out=scratch("difference", (rows, p_logits.shape[1])))
        mean_difference = np.vecdot(weights, difference).astype(np.float64) / mass_p
        weights = np.exp(q_logits, out=scratch("weights", q_logits.shape))
        mass_q = np.vecdot(weights, ones)
    trusted = _safe(mass_p) & _safe(mass_q) & np.isfinite(mean_difference)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p, log_q = np.log(mass_p.astype(np.float64)), np.log(mass_q.astype(np.float64))
        divergence = mean_difference - log_p + log_q
        error = ERROR_UNITS * _UNIT * (np.abs(log_p) + np.abs(log_q) + np.abs(mean_difference) + 1.0)
    return divergence, np.where(trusted, error, np.inf)


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
