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

from klcli.errors import DistributionError, InputError, UsageError

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
    normalised: bool = True  # False for rows used as stored (see as_log_rows' as_stored_below)
    precise: Callable[..., LogRows] | None = None  # set on --precision fast rows only (optional: row indices)

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


# Probability tolerance (SPEC §3). A row of probabilities (or log-probabilities) as a model wrote it is the
# float32 softmax of its logits, rounded to the dtype it was stored in. Its sum misses 1 by
#  - the float32 arithmetic of the softmax: the rounding of its sum Σ e^z, which every entry is divided by.
#    The rounding errors of a sum of V terms are ~u·√V in all (u = 2⁻²⁴); vectorised sums also lose the small
#    terms added to a lane that already holds the top token, which torch's 8-lane CPU kernel shows as up to
#    15·u·√V (measured on torch 2.13: two-level and confident rows up to 256k outcomes). SUM_SPREAD·u·√V
#    covers that three times over and stays below 1e-3 up to V = 380,000, so a row off by 1e-3 at
#    V = 32,000 (tolerance 5.1e-4) or 1e-2 at V = 128,256 (1.0e-3) is still an error: it is not rounding.
#    No sum of V terms errs by more than (V − 1)·u, the bound for short rows.
#  - the rounding of each stored entry, at most u_s relative (u_s the stored dtype's unit roundoff):
#    |Σ p̃ − Σ p| ≤ u_s·Σ p̃; float16 entries below its smallest normal (2⁻¹⁴) are rounded to a fixed grid
#    of 2⁻²⁴, up to 2⁻²⁵ each. A log-probability l̃ is rounded twice (z − max, then − log Z) and its
#    normaliser once: |Σ e^l̃ − 1| ≤ u_s·(1 + 2·Σ p̃·|l̃|), which is about 1e-2 for bfloat16 at H ≈ 1.
# Rows within SUM_FLOOR + SUM_SPREAD·u·√V + u_s pass at once; only a row outside that is judged by the
# data-dependent terms, and by the narrower type its values all fit in (a float32 array of bfloat16 or float16
# values, as `tensor.float().numpy()` writes, has that type's rounding).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
SUM_FLOOR = 1e-6  # for text and hand-made rows: probabilities written to 6 or more significant digits
SUM_SPREAD = 48.0
_F32_ROUNDOFF = UNIT_ROUNDOFF["float32"]
_F16_TINY, _F16_SUBNORMAL_ERROR = 2.0**-14, 2.0**-25


def _roundoff(stored: str) -> float:
    """The unit roundoff of a stored dtype; integers and unknown names are exact (as float64)."""
    return UNIT_ROUNDOFF.get(stored, UNIT_ROUNDOFF["float64"])


def sum_tolerance(stored: str, outcomes: int) -> float:
    """The tolerance every row of ``outcomes`` values stored as ``stored`` gets (SPEC §3, "Probability tolerance").

    Examples
    --------
    >>> f"{sum_tolerance('float64', 3):.2g}"  # hand-made rows: about the floor
    '1.1e-06'
    >>> f"{sum_tolerance('float32', 32000):.2g}", f"{sum_tolerance('float32', 128256):.2g}"
    ('0.00051', '0.001')
    >>> f"{sum_tolerance('bfloat16', 32000):.2g}"
    '0.0044'
    """
    return _arithmetic(outcomes) + _roundoff(stored)


def _arithmetic(outcomes: int) -> float:
    """The floor and the float32 softmax's own error at ``outcomes`` terms (see the comment above)."""
    return SUM_FLOOR + _F32_ROUNDOFF * min(SUM_SPREAD * float(np.sqrt(outcomes)), max(outcomes - 1, 1))


def _narrowest_type(row: np.ndarray, stored: str) -> str:
    """The narrowest float type every value of ``row`` is exactly representable in (at most ``stored``)."""
    if stored not in ("float32", "float64"):
        return stored
    finite = row[np.isfinite(row)]
    as_f32 = finite.astype(np.float32)
    if stored == "float64" and not np.array_equal(as_f32, finite):
        return stored
    if not np.any(as_f32.view(np.uint32) & 0xFFFF):
        return "bfloat16"
    with np.errstate(over="ignore"):
        if np.array_equal(as_f32.astype(np.float16).astype(np.float32), as_f32):
            return "float16"
    return "float32"


def row_tolerance(row: np.ndarray, kind: str, stored: str) -> tuple[float, str]:
    """The tolerance of one row from its values (probs or logprobs), and the type whose rounding it allows.

    Never smaller than :func:`sum_tolerance`; larger where the row's own values say its rounding can be larger.
    """
    narrowest = _narrowest_type(row, stored)
    roundoff = max(_roundoff(stored), _roundoff(narrowest))
    base = _arithmetic(row.size)
    if kind == "probs":
        stored_error = roundoff * float(np.sum(row))
        if narrowest == "float16":
            stored_error += _F16_SUBNORMAL_ERROR * int(np.count_nonzero(row < _F16_TINY))
    else:
        with np.errstate(invalid="ignore", under="ignore"):
            probs = np.exp(row)
            spread = -float(np.sum(np.where(probs > 0, probs * row, 0.0)))  # Σ p·|l|, the entropy
        stored_error = (roundoff + _F32_ROUNDOFF) * (1.0 + 2.0 * spread)
    return max(base + stored_error, sum_tolerance(stored, row.size)), narrowest


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
    stored: str | None = None,
    as_stored_below: float | None = None,
    reference: dict | None = None,
) -> LogRows:
    """Validate a block of rows of the given kind and bring it into log space.

    Parameters
    ----------
    block : ndarray, shape (rows, outcomes)
        The values as read, in any float dtype; accumulated in float64.
    kind : {'probs', 'logprobs', 'logits'}
        What the values are.
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
    stored : str, optional
        The dtype the values were stored in, when the block is a widened copy
        (``"bfloat16"``); by default the block's own. It sets the tolerance on
        row sums (see :func:`sum_tolerance`).
    as_stored_below : float, optional
        For log-probabilities that are used as stored (a quantised dump, which
        sums to 1 only to its rounding): not validated nor renormalised, and
        entries at or below this value left out of expectations over this
        side (their weights are 0).
    reference : dict, optional
        With ``kind='reference'``: the layout of packed top-K reference rows
        (``top_k``, ``vocab``, ``has_labels``; see :mod:`klcli.core.reference`),
        read as a distribution over the K stored tokens and one tail bucket.

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
    stored = stored or block.dtype.name
    if kind == "reference":  # a top-K reference file's rows: K tokens and a tail (klcli.core.reference)
        from klcli.core.reference import reference_rows

        return reference_rows(block, label=label, first_row=first_row, as_stored_below=as_stored_below,
                              stored=stored, **(reference or {}))
    if block.dtype == np.float16:  # NumPy's float16 arithmetic is slow; float32 holds every half exactly
        block = widen_half(block)
    values = block if kind == "logits" else np.asarray(block, dtype=np.float64)
    if as_stored_below is not None and kind == "logprobs":
        return _as_stored(values, as_stored_below)
    if kind == "probs":
        rows = _from_probs(values, label, first_row, normalize, stored)
    elif kind == "logprobs":
        rows = _from_logprobs(values, label, first_row, normalize, stored)
    elif kind == "logits":
        if fast and block.dtype == np.float32 and temperature == 1.0 and not epsilon:
            # Validated only if the fast kernel hands rows back: a non-finite value cannot pass it unseen.
            return LogRows(block, None, precise=lambda index=None: _precise_logits(block, label, first_row, index))
        rows = _from_logits(block, label, first_row, temperature)
        temperature = 1.0
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


def _as_stored(values: np.ndarray, floor: float) -> LogRows:
    """Log-probabilities used as stored: not renormalised, entries at or below ``floor`` weighing 0."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.exp(values)
    weights[values <= floor] = 0.0
    return LogRows(values, np.zeros(values.shape[0]), _weights=weights, _mass=np.ones(values.shape[0]),
                   normalised=False)


def _precise_logits(block, label, first_row, index=None) -> LogRows:
    """``--precision fast`` rows at full precision: the whole block, or the rows ``index`` (a fallback's few).

    A bad value among the chosen rows is reported by converting the whole block, so that the error names
    its row of the input.
    """
    if index is None:
        return _from_logits(block, label, first_row, 1.0)
    try:
        return _from_logits(block[index], label, first_row, 1.0)
    except InputError:
        return _from_logits(block, label, first_row, 1.0)


def _from_logits(block, label, first_row, temperature) -> LogRows:
    """Logits as log-probabilities: shifted by each row's maximum, then exp, all in float64.

    The shift is what keeps every figure's error independent of the logits'
    magnitude (SPEC §1's contract holds for logits shifted by any constant):
    ``z − max`` is exact for float32 or float16 logits held in float64, so
    log p = (z − max) − log Σ e^(z − max) is formed from numbers of the size
    of the row's range, and the normaliser log Σ e^(z − max) lies in
    [0, log V]. Without it, log Σ e^z of logits near 600 carries an absolute
    rounding of ~1e-13, which entropies and NLLs of confident rows (values of
    1e-8 and below) inherit in full.
    """
    scaled = block if temperature == 1.0 else _scaled_by_temperature(block, temperature, label, first_row)
    peak = np.max(scaled, axis=1, keepdims=True)
    if not (np.all(np.isfinite(peak)) and np.isfinite(np.min(scaled))):
        _require_finite(np.asarray(scaled, dtype=np.float64), label, first_row, "logits")
    shifted = np.subtract(scaled, peak, dtype=np.float64)
    weights = np.exp(shifted)
    mass = np.sum(weights, axis=1)
    return LogRows(shifted, np.log(mass), _weights=weights, _mass=mass)


def _scaled_by_temperature(block, temperature, label, first_row):
    """``block / temperature``; a tiny temperature that makes finite logits overflow is the temperature's fault."""
    with np.errstate(over="ignore"):
        scaled = np.divide(block, temperature, dtype=np.float64)
    overflowed = ~np.isfinite(scaled) & np.isfinite(block)
    if overflowed.any():
        row, col = np.argwhere(overflowed)[0]
        largest = float(np.max(np.abs(block[np.isfinite(block)])))
        raise UsageError(
            f"--temperature {temperature!r}: is too small; {label} row {first_row + row} column {col} divided by it "
            f"overflows float64; use a temperature of at least {largest / np.finfo(np.float64).max * 2:.3g}"
        )
    return scaled


def _from_probs(values, label, first_row, normalize, stored) -> LogRows:
    _require_finite(values, label, first_row, "probabilities")
    negative = values < 0
    if negative.any():
        row, col = np.argwhere(negative)[0]
        raise DistributionError(
            f"{label}: row {first_row + row} has a negative probability {float(values[row, col])!r} "
            f"at column {col}; probabilities must be >= 0",
            hint="pass --kind logits or --kind logprobs if these are scores",
            api_hint="pass kind='logits' or kind='logprobs' if these are scores", form="{message} ({hint})",
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
        _require_unit_sums(sums, values, "probs", label, first_row, stored)
    # Validated rows are renormalised to sum exactly 1, as scipy.stats.entropy does.
    with np.errstate(divide="ignore"):
        return LogRows(np.log(values), np.log(sums), raw=values, _weights=values, _mass=sums)


def _from_logprobs(values, label, first_row, normalize, stored) -> LogRows:
    bad = np.isnan(values) | (values == np.inf)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DistributionError(
            f"{label}: row {first_row + row} has log-probability {float(values[row, col])!r} at column {col}; "
            "log-probabilities must be finite or -inf"
        )
    offset = logsumexp(values)
    if not normalize:
        _require_unit_sums(np.exp(offset), values, "logprobs", label, first_row, stored)
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


def unit_sum_misses(sums: np.ndarray, values: np.ndarray, kind: str, stored: str) -> np.ndarray:
    """The rows whose sum misses 1 by more than their tolerance (indices; SPEC §3 "Probability tolerance")."""
    off = np.flatnonzero(~(np.abs(sums - 1.0) <= sum_tolerance(stored, values.shape[1])))
    return np.array([row for row in off if not abs(sums[row] - 1.0) <= row_tolerance(values[row], kind, stored)[0]],
                    dtype=np.int64)


def looks_like_probabilities(block: np.ndarray, stored: str | None = None) -> bool:
    """Whether every row of ``block`` is a valid probability vector: entries in [0, 1] summing to 1 (SPEC §3).

    A real model's logits essentially never pass (they are negative, or exceed 1, or miss a unit sum), so
    a block that does, read as logits, is probabilities read as the wrong kind.

    Examples
    --------
    >>> looks_like_probabilities(np.array([[0.2, 0.8], [0.5, 0.5]])), looks_like_probabilities(np.array([[0.2, 0.9]]))
    (True, False)
    """
    if block.ndim != 2 or block.size == 0:
        return False
    stored = stored or block.dtype.name
    values = np.asarray(block, dtype=np.float64)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        return False
    return unit_sum_misses(values.sum(axis=1), values, "probs", stored).size == 0


def _require_unit_sums(sums, values, kind, label, first_row, stored) -> None:
    off = unit_sum_misses(sums, values, kind, stored)
    if off.size:
        row = int(off[0])
        tolerance, narrowest = row_tolerance(values[row], kind, stored)
        raise DistributionError(
            f"{label}: row {first_row + row} sums to {float(sums[row])!r}, not 1 (tolerance {tolerance:.2g} for "
            f"{values.shape[1]} {narrowest} values)",
            hint="pass --normalize for counts or weights, or --kind logits if these are logits",
            api_hint="pass normalize=True for counts or weights, or kind='logits' if these are logits",
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
