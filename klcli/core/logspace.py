"""Rows of probabilities, log-probabilities or logits, brought into log space.

Everything downstream works on :class:`LogRows`, a block of rows whose
log-probabilities are ``shifted - offset[:, None]``. Keeping the per-row
normaliser apart from the element values lets the pairwise kernels form
``log p - log q`` from the raw inputs (exact for float32 data widened to
float64) and correct the normalisers separately, instead of subtracting two
rounded log-probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klcli.errors import DistributionError

KINDS = ("probs", "logprobs", "logits")
# llama.cpp's decoded base log-probabilities, used exactly as llama-perplexity uses them (see _from_llama).
LLAMA_KIND = "llama-logprobs"
LLAMA_CUTOFF = -16.0


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

    ``shifted`` may be the input block itself (float32 logits are not copied);
    arithmetic on it is done in float64. ``weights`` are unnormalised
    probabilities with row sums ``mass`` when they were computed on the way
    (``e^x`` for logits, the validated values for probabilities), so kernels
    can take expectations without another exponential pass. ``raw`` keeps
    validated probabilities as given, so that ratios ``p / q`` are formed
    directly, more accurately than a difference of two logarithms.

    ``--precision fast`` rows are float32 logits not yet normalised
    (``offset`` is None): the fast kernel forms e^z and its sums itself, and
    ``precise()`` converts the block at full precision where it cannot.
    """

    shifted: np.ndarray
    offset: np.ndarray | None
    raw: np.ndarray | None = None
    _weights: np.ndarray | None = None
    _mass: np.ndarray | None = None
    normalised: bool = True  # False for llama.cpp's quantised rows, which are used as they are
    precise: Callable[[], LogRows] | None = None  # set on --precision fast rows only

    @property
    def fast(self) -> bool:
        return self.precise is not None

    @property
    def rows(self) -> int:
        return self.shifted.shape[0]

    def log_probs(self) -> np.ndarray:
        return self.shifted - self.offset[:, None]

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised probabilities and their row sums: ``p = weights / mass[:, None]``."""
        if self._weights is None:
            self._weights, self._mass = np.exp(self.log_probs()), np.ones(self.rows)
        return self._weights, self._mass

    def probs(self) -> np.ndarray:
        weights, mass = self.weights()
        return weights / mass[:, None]


def widen_half(block: np.ndarray) -> np.ndarray:
    """float16 values as float32, exactly, by moving their bits (faster than NumPy's cast).

    A half's exponent and mantissa, shifted into a float32's bit positions, read
    as a float32 2^112 times too small, for normal and subnormal values alike;
    one exact multiplication puts it right. The sign arrives by sign extension;
    infinities and NaNs are given an all-ones exponent.

    Examples
    --------
    >>> halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    >>> wide, cast = widen_half(halves), halves.astype(np.float32)
    >>> bool(np.array_equal(wide, cast, equal_nan=True))
    True
    """
    # Sign-extend to 32 bits and shift (one pass): the sign lands on bit 31, exponent and mantissa on
    # bits 13-27; the mask clears the sign's copies in between. In place from then on, no temporaries.
    wide = np.left_shift(block.view(np.int16), 13, dtype=np.int32)
    wide &= np.int32(-0x70002000)  # 0x8FFFE000
    values = wide.view(np.float32)
    values *= np.float32(2.0**112)
    # An all-ones exponent (infinity or NaN) lands on 65536 ≤ |value| < 131072, above the largest half.
    if values.size and (values.max() >= 65536.0 or values.min() <= -65536.0):
        bits = block.view(np.uint16)
        special = (bits & 0x7C00) == 0x7C00
        half = bits[special].astype(np.uint32)
        values[special] = (((half & 0x8000) << 16) | ((half & 0x7FFF) << 13) | 0x7F800000).view(np.float32)
    return values


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
    fast: bool = False,
) -> LogRows:
    """Validate a block of rows of the given kind and bring it into log space.

    Parameters
    ----------
    block : ndarray, shape (rows, outcomes)
        The values as read, in any float dtype; accumulated in float64.
    kind : {'probs', 'logprobs', 'logits', 'llama-logprobs'}
        The last is llama.cpp's decoded base log-probabilities, used as llama.cpp uses them.
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
    fast : bool
        For float32 logits (untempered, unsmoothed): leave them as they are,
        for the float32 kernel of ``--precision fast`` (see LogRows); other
        rows ignore it.

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
    if block.ndim != 2 or block.shape[1] == 0:
        raise DistributionError(f"{label}: expected rows of at least one outcome, got shape {block.shape}")
    tolerance = sum_tolerance(block.dtype)
    if block.dtype == np.float16:  # NumPy's float16 arithmetic is slow; float32 holds every half exactly
        block = widen_half(block)
    values = block if kind == "logits" else np.asarray(block, dtype=np.float64)
    if kind == "probs":
        rows = _from_probs(values, label, first_row, normalize, tolerance)
    elif kind == "logprobs":
        rows = _from_logprobs(values, label, first_row, normalize, tolerance)
    elif kind == "logits":
        if fast and block.dtype == np.float32 and temperature == 1.0 and not epsilon:
            # Validated only if the fast kernel hands rows back: a non-finite value cannot pass it unseen.
            return LogRows(block, None, precise=lambda: _from_logits(block, label, first_row, 1.0))
        rows = _from_logits(block, label, first_row, temperature)
        temperature = 1.0
    elif kind == LLAMA_KIND:
        return _from_llama(values)
    else:  # the CLI only offers KINDS; this guards the Python API
        raise DistributionError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if temperature != 1.0:
        shifted = rows.log_probs() / temperature
        rows = LogRows(shifted, logsumexp(shifted))
    if epsilon:
        smoothed = rows.probs() + epsilon
        with np.errstate(divide="ignore"):
            mass = np.sum(smoothed, axis=1)
            rows = LogRows(np.log(smoothed), np.log(mass), raw=smoothed, _weights=smoothed, _mass=mass)
    return rows


def _from_llama(values: np.ndarray) -> LogRows:
    """llama.cpp's decoded log-probabilities, as ``llama-perplexity --kl-divergence`` uses them.

    Not renormalised (they sum to 1 only to the 16-bit quantisation), and
    entries at or below −16 nats are left out of expectations over this side
    (their weights are 0), as llama.cpp skips them when it sums its KL — so
    klcli's figures for a base file are llama.cpp's own.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.exp(values)
    weights[values <= LLAMA_CUTOFF] = 0.0
    return LogRows(values, np.zeros(values.shape[0]), _weights=weights, _mass=np.ones(values.shape[0]),
                   normalised=False)


def _from_logits(block, label, first_row, temperature) -> LogRows:
    """Logits as log-probabilities: exp in float64 straight from the input, shifted only if needed.

    Logits of moderate size (|z| below ~700) need no max-shift: ``e^z`` is
    formed once, in float64, and kept as the weights. Larger ones (or
    non-finite values, which are then reported) take the max-shifted path.
    """
    scaled = block if temperature == 1.0 else _scaled_by_temperature(block, temperature, label, first_row)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(scaled, dtype=np.float64)
        mass = np.sum(weights, axis=1)
    # Sums far from float64's limits keep full precision; otherwise shift by the row maximum.
    if np.all((mass < 1e300) & (mass > 1e-200)) and np.isfinite(np.min(scaled)):
        return LogRows(scaled, np.log(mass), _weights=weights, _mass=mass)
    values = np.asarray(scaled, dtype=np.float64)
    _require_finite(values, label, first_row, "logits")
    shifted = values - np.max(values, axis=1, keepdims=True)
    weights = np.exp(shifted)
    mass = np.sum(weights, axis=1)
    return LogRows(shifted, np.log(mass), _weights=weights, _mass=mass)


def _scaled_by_temperature(block, temperature, label, first_row):
    """``block / temperature``; a tiny temperature that makes finite logits overflow is the temperature's fault."""
    with np.errstate(over="ignore"):
        scaled = np.divide(block, temperature, dtype=np.float64)
    overflowed = ~np.isfinite(scaled) & np.isfinite(block)
    if overflowed.any():
        from klcli.errors import UsageError

        row, col = np.argwhere(overflowed)[0]
        largest = float(np.max(np.abs(block[np.isfinite(block)])))
        raise UsageError(
            f"--temperature {temperature!r}: is too small; {label} row {first_row + row} column {col} divided by it "
            f"overflows float64; use a temperature of at least {largest / np.finfo(np.float64).max * 2:.3g}"
        )
    return scaled


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
        return LogRows(np.log(values), np.log(sums), raw=values, _weights=values, _mass=sums)


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
    """``log p - log q`` element-wise, in float64.

    The element part comes from the raw inputs — a ratio of probabilities, or a
    difference of logits, which is exact for float32 data held in float64 —
    and the normalisers are subtracted once per row. The result carries one
    rounding error per row, a constant ~1e-16·|log Z|; see :func:`normaliser_error`.

    Broadcasts a single row of either side against many rows of the other.
    Entries are ``+inf`` where p > 0 = q, and ``-inf``/NaN where p = 0
    (callers weight by p and mask those).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if p.raw is not None and q.raw is not None:
            ratio = np.log(p.raw / q.raw)
            # Where p/q over- or underflows (subnormal probabilities), the difference of logs is exact enough.
            lost = ~np.isfinite(ratio) & (p.raw > 0) & (q.raw > 0)
            if lost.any():
                ratio[lost] = np.broadcast_to(p.shifted - q.shifted, ratio.shape)[lost]
        else:
            ratio = np.subtract(p.shifted, q.shifted, dtype=np.float64)
        ratio -= (p.offset - q.offset)[:, None]
    return ratio


def normaliser_error(ratio: np.ndarray, q: LogRows) -> np.ndarray:
    """The constant error c of each row of ``log_ratio``: log E_q[e^ratio], which is 0 exactly.

    Subtracting c makes the ratio exact up to element-wise rounding, which
    matters only where a divergence is itself tiny (nearly identical rows).
    Rows where it cannot be formed (zeros, overflow) get 0.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        excess = np.sum(np.broadcast_to(q.probs(), ratio.shape) * np.expm1(ratio), axis=1)
        return np.where(np.isfinite(excess), np.log1p(excess), 0.0)
