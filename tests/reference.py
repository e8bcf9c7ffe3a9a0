"""Extended-precision references (numpy.longdouble) for the precision tests and the accuracy figures.

Computed straight from the definitions — max-shifted log-softmax, then the
sums — in a 64-bit-mantissa type on x86, so they are closer to the exact
values than any float64 kernel. Each takes float32 (or float16) rows.
"""

from __future__ import annotations

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.longdouble)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_normaliser(z: np.ndarray) -> np.ndarray:
    """log Σ e^z per row."""
    z = np.asarray(z, dtype=np.longdouble)
    peak = z.max(axis=1, keepdims=True)
    return np.log(np.exp(z - peak).sum(axis=1)) + peak[:, 0]


def kl(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    log_p, log_q = log_softmax(z), log_softmax(y)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=1)


def cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    log_p, log_q = log_softmax(z), log_softmax(y)
    return -np.sum(np.exp(log_p) * log_q, axis=1)


def js(z: np.ndarray, y: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    log_p, log_q = log_softmax(z), log_softmax(y)
    p, q = np.exp(log_p), np.exp(log_q)
    log_m = np.log(weights[0] * p + weights[1] * q)
    return weights[0] * np.sum(p * (log_p - log_m), axis=1) + weights[1] * np.sum(q * (log_q - log_m), axis=1)


def total_variation(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """½·Σ|p − q| per row."""
    return 0.5 * np.sum(np.abs(np.exp(log_softmax(z)) - np.exp(log_softmax(y))), axis=1)


def token_nll(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.longdouble)
    return log_normaliser(z) - z[np.arange(z.shape[0]), labels]


def entropy(z: np.ndarray) -> np.ndarray:
    log_p = log_softmax(z)
    return -np.sum(np.exp(log_p) * log_p, axis=1)


# --- mpmath: exact to any precision, for small rows (and platforms whose longdouble is float64) ---


def mp_log_softmax(row, dps: int = 50):
    """A row's log-probabilities as mpmath numbers, from its values taken exactly (float32/64 → Python floats)."""
    import mpmath

    with mpmath.workdps(dps):
        values = [mpmath.mpf(float(v)) for v in row]
        normaliser = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in values))
        return [v - normaliser for v in values]


def mp_figures(z_row, y_row, label: int, weights=(0.5, 0.5), dps: int = 50) -> dict[str, float]:
    """KL(P‖Q), KL(Q‖P), H(P), H(P,Q), the weighted JS and −log p[label], P = softmax(z), Q = softmax(y)."""
    import mpmath

    with mpmath.workdps(dps):
        log_p, log_q = mp_log_softmax(z_row, dps), mp_log_softmax(y_row, dps)
        p, q = [mpmath.exp(v) for v in log_p], [mpmath.exp(v) for v in log_q]
        w_p, w_q = (mpmath.mpf(w) for w in weights)
        log_m = [mpmath.log(w_p * a + w_q * b) for a, b in zip(p, q)]
        return {
            "kl": float(mpmath.fsum(a * (la - lb) for a, la, lb in zip(p, log_p, log_q))),
            "kl_reverse": float(mpmath.fsum(b * (lb - la) for b, la, lb in zip(q, log_p, log_q))),
            "entropy": float(-mpmath.fsum(a * la for a, la in zip(p, log_p))),
            "cross_entropy": float(-mpmath.fsum(a * lb for a, lb in zip(p, log_q))),
            "js": float(w_p * mpmath.fsum(a * (la - lm) for a, la, lm in zip(p, log_p, log_m))
                        + w_q * mpmath.fsum(b * (lb - lm) for b, lb, lm in zip(q, log_q, log_m))),
            "nll": float(-log_p[label]),
        }
