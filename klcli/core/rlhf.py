"""KL estimators from sampled tokens, as RLHF trainers use them (Schulman, "Approximating KL Divergence", 2020).

With tokens x ~ π and log r = log π_ref(x) − log π(x):

- k1 = −log r: unbiased for D(π‖π_ref), high variance, negative for single tokens;
- k2 = ½(log r)²: biased, low variance, always ≥ 0;
- k3 = (r − 1) − log r: unbiased and always ≥ 0 (r − 1 − log r ≥ 0), low variance.

Each is summed over a sequence's tokens to estimate that sequence's KL.
"""

from __future__ import annotations

import numpy as np

ESTIMATORS = ("k1", "k2", "k3")


def token_estimates(policy_logprobs: np.ndarray, ref_logprobs: np.ndarray) -> dict[str, np.ndarray]:
    """k1, k2 and k3 per token from the sampled tokens' log-probabilities (in nats).

    Examples
    --------
    >>> import math
    >>> e = token_estimates(np.array([math.log(0.5)]), np.array([math.log(0.25)]))
    >>> [round(float(e[k][0]), 12) for k in ("k1", "k2", "k3")]  # log r = −log 2
    [0.69314718056, 0.240226506959, 0.19314718056]
    """
    log_r = np.asarray(ref_logprobs, dtype=np.float64) - np.asarray(policy_logprobs, dtype=np.float64)
    return {
        "k1": -log_r,
        "k2": 0.5 * log_r**2,
        "k3": np.expm1(log_r) - log_r,  # expm1 keeps r − 1 exact for r near 1
    }


def per_sequence(values: np.ndarray, sequence: np.ndarray, count: int) -> np.ndarray:
    """Sums of per-token values by sequence id.

    Examples
    --------
    >>> per_sequence(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), 2).tolist()
    [3.0, 3.0]
    """
    return np.bincount(sequence, weights=values, minlength=count)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float | None]:
    """The batch mean and its standard error std(n−1)/√n (None for one value, or values including inf).

    Examples
    --------
    >>> mean_and_stderr(np.array([1.0, 3.0]))
    (2.0, 1.0)
    """
    mean = float(np.mean(values))
    if values.size < 2 or not np.isfinite(values).all():  # the spread of values including inf is undefined
        return mean, None
    return mean, float(np.std(values, ddof=1) / np.sqrt(values.size))
