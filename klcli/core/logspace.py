"""Rows of probabilities, log-probabilities or logits, brought into log space.

Everything downstream works on :class:`LogRows`, a block of rows whose
log-probabilities are ``shifted - offset[:, None]``. Keeping the per-row
normaliser apart from the element values lets the pairwise kernels form
``log p - log q`` from the raw inputs (exact for float32 data widened to
float64) and correct the normalisers separately, instead of subtracting two
rounded log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from klcli.errors import DistributionError

KINDS = ("probs", "logprobs", "logits")


def logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(x)))`` over the last axis, computed stably.

    Parameters
    ----------
    x : ndarray
        Values in log space; ``-inf`` entries contribute nothing.

    Returns
    -------
    ndarray
        One value per row (float64); ``-inf`` for a row of all ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> float(logsumexp(np.array([1000.0, 1000.0])))  # 1000 + log 2, no overflow
    1000.6931471805599
    >>> logsumexp(np.array([[0.0, -np.inf], [-np.inf, -np.inf]])).tolist()
    [0.0, -inf]
    """
    x = np.asarray(x, dtype=np.float64)
    peak = np.max(x, axis=-1, keepdims=True)
    # A row of all -inf has no finite peak; shifting by 0 keeps it -inf.
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(x - peak), axis=-1))
    return total + peak[..., 0]


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``log_softmax(logits / temperature)`` over the last axis, in float64.

    Never computed as ``log(softmax(x))``: the max-shifted values minus their
    logsumexp stay finite for logits of any magnitude.

    Examples
    --------
    >>> import numpy as np
    >>> np.round(np.exp(log_softmax(np.array([0.0, np.log(3.0)]))), 12).tolist()
    [0.25, 0.75]
    >>> log_softmax(np.array([1e4, -1e4], dtype=np.float16)).tolist()
    [0.0, -20000.0]
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return scaled - logsumexp(scaled)[..., None]


@dataclass
class LogRows:
    """A block of distributions in log space: ``log p = shifted - offset[:, None]``.

    ``raw`` keeps the validated probabilities themselves when the rows were
    given as probabilities (and not tempered or smoothed), so that ratios
    ``p / q`` can be formed directly, which is more accurate than a
    difference of two logarithms.
    """

    shifted: np.ndarray
    offset: np.ndarray
    raw: np.ndarray | None = None

    def log_probs(self) -> np.ndarray:
        return self.shifted - self.offset[:, None]

    def probs(self) -> np.ndarray:
        if self.raw is not None:
            return self.raw / np.exp(self.offset)[:, None]
        return np.exp(self.log_probs())


def sum_tolerance(dtype: np.dtype) -> float:
    """Relative tolerance on a probability row's sum, by input precision (SPEC §3)."""
    return 1e-3 if np.dtype(dtype).itemsize <= 2 else 1e-6


def as_log_rows(
    block: np.ndarray,
    kind: str,
    *,
    label: str,
    first_row: int = 0,
    temperature: float = 1.0,
    normalize: bool = False,
    epsilon: float = 0.0,
) -> LogRows:
    """Validate a block of rows of the given kind and bring it into log space.

    Parameters
    ----------
    block : ndarray, shape (rows, outcomes)
        The values as read, in any float dtype; accumulated in float64.
    kind : {'probs', 'logprobs', 'logits'}
    label : str
        How errors name this input (e.g. ``"P (p.csv)"``).
    first_row : int
        The index of the block's first row in the whole input, for messages.
    temperature : float
        Divides log-probabilities (logits) before normalising; 1 leaves rows as they are.
    normalize : bool
        Rescale rows to sum 1 instead of requiring it.
    epsilon : float
        Added to every probability before renormalising (smoothing).

    Raises
    ------
    DistributionError
        A row that is not a valid distribution of ``kind``, naming the row and
        value and suggesting the fix.

    Examples
    --------
    >>> import numpy as np
    >>> rows = as_log_rows(np.array([[1.0, 3.0]]), "probs", label="P", normalize=True)
    >>> rows.probs().tolist()
    [[0.25, 0.75]]
    """
    values = np.asarray(block, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise DistributionError(f"{label}: expected rows of at least one outcome, got shape {values.shape}")
    tolerance = sum_tolerance(block.dtype)
    if kind == "probs":
        rows = _from_probs(values, label, first_row, normalize, tolerance)
    elif kind == "logprobs":
        rows = _from_logprobs(values, label, first_row, normalize, tolerance)
    elif kind == "logits":
        _require_finite(values, label, first_row, "logits")
        rows = LogRows(values, logsumexp(values))
    else:  # the CLI only offers KINDS; this guards the Python API
        raise DistributionError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if temperature != 1.0:
        shifted = rows.log_probs() / temperature
        rows = LogRows(shifted, logsumexp(shifted))
    if epsilon:
        smoothed = rows.probs() + epsilon
        with np.errstate(divide="ignore"):
            rows = LogRows(np.log(smoothed), np.log(np.sum(smoothed, axis=1)), raw=smoothed)
    return rows


def _from_probs(values, label, first_row, normalize, tolerance) -> LogRows:
    _require_finite(values, label, first_row, "probabilities")
    negative = values < 0
    if negative.any():
        row, col = np.argwhere(negative)[0]
        raise DistributionError(
            f"{label}: row {first_row + row} has a negative probability {float(values[row, col])!r} "
            f"at column {col}; probabilities must be >= 0 (pass --kind logits or --kind logprobs "
            "if these are scores)"
        )
    sums = np.sum(values, axis=1)
    if normalize:
        empty = np.flatnonzero(sums == 0)
        if empty.size:
            raise DistributionError(
                f"{label}: row {first_row + empty[0]} sums to 0 and cannot be normalised; "
                "every row needs a positive entry"
            )
    else:
        _require_unit_sums(sums, label, first_row, tolerance)
    # Validated rows are renormalised to sum exactly 1, as scipy.stats.entropy does.
    with np.errstate(divide="ignore"):
        return LogRows(np.log(values), np.log(sums), raw=values)


def _from_logprobs(values, label, first_row, normalize, tolerance) -> LogRows:
    bad = np.isnan(values) | (values == np.inf)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DistributionError(
            f"{label}: row {first_row + row} has log-probability {float(values[row, col])!r} at column {col}; "
            "log-probabilities must be finite or -inf"
        )
    offset = logsumexp(values)
    if not normalize:
        _require_unit_sums(np.exp(offset), label, first_row, tolerance)
    if np.isneginf(offset).any():
        row = int(np.flatnonzero(np.isneginf(offset))[0])
        raise DistributionError(f"{label}: row {first_row + row} is all -inf (no probability mass)")
    return LogRows(values, offset)


def _require_finite(values, label, first_row, what) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DistributionError(
            f"{label}: row {first_row + row} has {float(values[row, col])!r} at column {col}; "
            f"{what} must be finite numbers"
        )


def _require_unit_sums(sums, label, first_row, tolerance) -> None:
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DistributionError(
            f"{label}: row {first_row + row} sums to {float(sums[row])!r}, not 1 (tolerance {tolerance:g}); "
            "pass --normalize for counts or weights, or --kind logits if these are logits"
        )


def log_ratio(p: LogRows, q: LogRows) -> np.ndarray:
    """``log p - log q`` element-wise, accurate also for nearly equal rows.

    The element part comes from the raw inputs (a ratio of probabilities, or a
    difference of logits, which is exact for float32 data held in float64).
    The normaliser difference ``log Z_p - log Z_q`` is then refined as
    ``log E_q[p/q]``, so that rows differing by tiny amounts are not swamped by
    the rounding of two large logsumexps.

    Broadcasts a single row of either side against many rows of the other.
    Entries are ``+inf`` where p > 0 = q, and ``-inf``/NaN where p = 0
    (callers weight by p and mask those).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if p.raw is not None and q.raw is not None:
            ratio = np.log(p.raw / q.raw)
        else:
            ratio = p.shifted - q.shifted
        ratio -= (p.offset - q.offset)[:, None]
        # E_q[p/q] - 1 is 0 up to rounding; its log1p is the normaliser's error.
        excess = np.sum(q.probs() * np.expm1(ratio), axis=1)
        correction = np.where(np.isfinite(excess), np.log1p(excess), 0.0)
    ratio -= correction[:, None]
    return ratio
