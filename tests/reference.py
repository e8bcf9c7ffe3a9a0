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


def token_nll(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.longdouble)
    return log_normaliser(z) - z[np.arange(z.shape[0]), labels]
