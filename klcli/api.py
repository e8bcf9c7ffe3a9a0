"""The Python API (SPEC §7): klcli's kernels on arrays, in the style of ``scipy.stats`` and NumPy.

Arrays are positional, options keyword-only. Any array-like is accepted —
NumPy arrays of any float dtype (float16 included), nested lists, CPU torch
tensors — of any rank: a divergence is taken along ``axis`` and every other
axis is kept, with P and Q broadcast against each other as NumPy broadcasts.
One distribution gives a 0-d result (a ``numpy.float64``), as
``scipy.stats.entropy`` returns.

The arithmetic is the command line's own: each function moves ``axis`` last,
views the array as rows and calls the row kernels of :mod:`klcli.core`, so
the precision contract (SPEC §1: float64 accumulation in log space, within
1e-9 relative of the exact value whatever the input dtype) and the zero rules
(terms with p = 0 contribute 0; p > 0 where q = 0 gives +inf) are the CLI's.

Errors are ``ValueError`` subclasses for bad values or shapes
(:class:`~klcli.errors.InputError`, :class:`~klcli.errors.UsageError`) and
``TypeError`` subclasses for arguments of the wrong type, as NumPy and SciPy
raise them; every one is also a :class:`~klcli.errors.KlcliError`.

Examples
--------
>>> import numpy as np
>>> float(kl([0.5, 0.5], [0.9, 0.1]))  # log(5/3) nats
0.5108256237659907
>>> kl(np.array([[0.5, 0.5], [0.9, 0.1]]), [0.9, 0.1], base=2).round(12).tolist()
[0.736965594166, 0.0]
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from typing import NamedTuple

import numpy as np

from klcli.core.discrete import _take_rows, entropy_rows, js_rows, kl_rows
from klcli.core.logspace import KINDS, LogRows, as_log_rows
from klcli.core.logspace import log_softmax as _log_softmax_rows
from klcli.core.logspace import logsumexp as _logsumexp_rows
from klcli.core.perplexity import IGNORE_INDEX, as_token_ids, corpus_perplexity, sequence_perplexities, token_nll
from klcli.core.stats import summarize as _summarize
from klcli.errors import ArgumentTypeError, InputError, ShapeError, UsageError

__all__ = ["kl", "cross_entropy", "entropy", "js", "perplexity", "PerplexityResult", "gaussian_kl", "read",
           "log_softmax", "logsumexp", "summarize"]

_AxisError = getattr(np, "exceptions", np).AxisError  # numpy.exceptions from 1.25; the top level before
_DIRECTIONS = ("forward", "reverse")
_TOKEN_KINDS = ("logits", "logprobs", "probs")


# --- arguments ----------------------------------------------------------------


def _array(values, name: str) -> np.ndarray:
    """Any array-like as an ndarray of numbers: float16/32/64 kept, other numbers as float64.

    torch tensors are detached and brought to the CPU (bfloat16 widened to
    float32, exactly); strings, mappings and arrays of objects are a TypeError.
    """
    if values is None or isinstance(values, (str, bytes, dict, set)):
        raise ArgumentTypeError(f"{name} must be an array of numbers, not {type(values).__name__}")
    if type(values).__module__.split(".")[0] == "torch" and hasattr(values, "detach"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it exactly
            values = values.float()
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise InputError(f"{name} is not a rectangular array of numbers ({exc})") from None
    except TypeError as exc:
        raise ArgumentTypeError(f"{name} cannot be read as an array of numbers ({exc})") from None
    if array.dtype.kind == "f":
        return array if array.dtype in (np.float16, np.float32, np.float64) else array.astype(np.float64)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    raise ArgumentTypeError(f"{name} must hold real numbers, not dtype {array.dtype}")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False, not {type(value).__name__}")
    return bool(value)


def _choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a string, one of {', '.join(map(repr, choices))}; "
                                f"not {type(value).__name__}")
    if value not in choices:
        raise UsageError(f"{name}={value!r}: use one of {', '.join(map(repr, choices))}")
    return value


def _log_base(base) -> float:
    """What a figure in nats is divided by for ``base`` (None: nats), as the CLI's ``--base``."""
    if base is None:
        return 1.0
    value = _number(base, "base")
    if not (math.isfinite(value) and value > 0 and value != 1):
        raise UsageError(f"base={base!r}: use a positive number other than 1 (2 for bits, 10 for bans; None for nats)")
    return 1.0 if value == math.e else math.log(value)


def _temperature(value) -> float:
    value = _number(value, "temperature")
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"temperature={value!r}: the temperature must be a finite number > 0")
    return value


def _epsilon(value) -> float:
    value = _number(value, "epsilon")
    if not (value >= 0 and math.isfinite(value)):
        raise UsageError(f"epsilon={value!r}: the smoothing must be a finite number >= 0")
    return value


def _weights(weights) -> tuple[float, float]:
    """Two weights ≥ 0 summing to 1 (within 1e-9), as the CLI's ``--weights``."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") or len(weights) != 2:
        raise ArgumentTypeError(f"weights must be a pair of numbers (π1, π2), not {weights!r}")
    first, second = (_number(w, "weights") for w in weights)
    if not (first >= 0 and second >= 0 and math.isclose(first + second, 1.0, rel_tol=0, abs_tol=1e-9)):
        raise UsageError(f"weights={tuple(weights)!r}: the weights must be >= 0 and sum to 1 (e.g. (0.9, 0.1))")
    return first, second


def _axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints, or None for all) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    chosen = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    normalised = []
    for item in chosen:
        try:
            index = operator.index(item)
        except TypeError:
            raise ArgumentTypeError(f"axis must be an integer, a tuple of integers or None, not {axis!r}") from None
        if not -ndim <= index < ndim:
            raise _AxisError(index, ndim)
        normalised.append(index % ndim)
    if len(set(normalised)) != len(normalised):
        raise UsageError(f"axis={axis!r} names an axis twice")
    return tuple(sorted(normalised))


def _along(values: np.ndarray, axis, name: str) -> np.ndarray:
    """``values`` with the outcome axis moved last (the divergence is taken along it)."""
    if values.ndim == 0:
        raise ShapeError(f"{name} is a single number, not a distribution; give an array of outcomes")
    if isinstance(axis, (tuple, list)) or axis is None:
        raise ArgumentTypeError(f"axis must be one integer (the axis of outcomes), not {axis!r}")
    (index,) = _axes(axis, values.ndim)
    return np.moveaxis(values, index, -1)


def _shaped(values: np.ndarray, shape: tuple[int, ...]):
    """Per-row values in the leading shape; a 0-d result as a ``numpy.float64``, as scipy returns."""
    values = np.asarray(values, dtype=np.float64).reshape(shape)
    return values[()] if values.ndim == 0 else values


# --- distributions as rows in log space ---------------------------------------


def _log_rows(values: np.ndarray, label: str, kind: str, batch: tuple[int, ...], *, temperature: float,
              normalize: bool, epsilon: float = 0.0):
    """One side's distributions (outcomes last) as a function ``(start, stop) → LogRows`` of output rows.

    Rows are validated as the side's own rows, numbered in C order over its
    leading axes (in error messages too), block by block as the CLI reads a
    file, so memory stays bounded. A single distribution is converted once
    and stays one row (the kernels broadcast it); a side that broadcasts
    otherwise is converted whole and its rows repeated to ``batch``.
    """
    own = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1])

    def convert(block: np.ndarray, first_row: int) -> LogRows:
        return as_log_rows(block, kind, label=label, first_row=first_row, temperature=temperature,
                           normalize=normalize, epsilon=epsilon)

    if own == batch:
        return lambda start, stop: convert(flat[start:stop], start)
    rows = convert(flat, 0)
    if math.prod(own) == 1:
        return lambda start, stop: rows
    index = np.broadcast_to(np.arange(math.prod(own)).reshape(own), batch).reshape(-1)
    return lambda start, stop: _take_rows(rows, index[start:stop])


def _pair(p, q, *, kind, p_kind, q_kind, axis, temperature, normalize, epsilon=0.0):
    """P and Q as row-block functions (see :func:`_log_rows`), their broadcast leading shape, and the outcomes."""
    kind = _choice(kind, "kind", KINDS)
    kinds = (kind if p_kind is None else _choice(p_kind, "p_kind", KINDS),
             kind if q_kind is None else _choice(q_kind, "q_kind", KINDS))
    options = {"temperature": _temperature(temperature), "normalize": _flag(normalize, "normalize"),
               "epsilon": _epsilon(epsilon)}
    p_values, q_values = _along(_array(p, "p"), axis, "p"), _along(_array(q, "q"), axis, "q")
    if p_values.shape[-1] != q_values.shape[-1]:
        raise ShapeError(f"p has {p_values.shape[-1]} outcomes along axis {axis} but q has {q_values.shape[-1]}; "
                         "both need the same outcomes")
    try:
        batch = np.broadcast_shapes(p_values.shape[:-1], q_values.shape[:-1])
    except ValueError:
        raise ShapeError(f"p of shape {np.shape(p)} and q of shape {np.shape(q)} do not broadcast against each "
                         f"other (outside axis {axis})") from None
    if math.prod(batch) == 0:
        return None, None, batch, p_values.shape[-1]
    p_rows = _log_rows(p_values, "p", kinds[0], batch, **options)
    q_rows = _log_rows(q_values, "q", kinds[1], batch, **options)
    return p_rows, q_rows, batch, p_values.shape[-1]


def _per_row(kernel, sides, batch: tuple[int, ...], outcomes: int, scale: float):
    """``kernel(*LogRows)`` over blocks of about a million values (as the CLI's), in the leading shape."""
    from klcli.io.source import rows_per_block

    if math.prod(batch) == 0:
        return _shaped(np.zeros(0), batch)
    total, step = math.prod(batch), rows_per_block(outcomes)
    parts = []
    for start in range(0, total, step):
        stop = min(start + step, total)
        values = np.asarray(kernel(*(side(start, stop) for side in sides)), dtype=np.float64)
        parts.append(np.broadcast_to(values, (stop - start,)))  # two single rows give one value
    return _shaped(np.concatenate(parts) / scale, batch)


_ROW_OPTIONS = """kind : {'probs', 'logprobs', 'logits'}, optional
        How the values are given. Probabilities must be >= 0 and each
        distribution sum to 1 (within a tolerance set by the stored dtype
        and the number of outcomes; SPEC §3, "Probability tolerance");
        log-probabilities likewise in log space; logits z become
        ``log_softmax(z / temperature)``. Default 'probs'.
    axis : int, optional
        The axis of outcomes; every other axis is kept. Default -1.
    base : float, optional
        The logarithm's base: None (the default) for nats, 2 for bits, 10 for
        bans, any B > 0 other than 1.
    temperature : float, optional
        Divides log-probabilities (logits) before normalising, as in
        distillation. Default 1.
    normalize : bool, optional
        Rescale non-negative rows (counts, weights) to sum 1 instead of
        requiring it. Default False."""


def kl(p, q, *, kind="probs", axis=-1, base=None, temperature=1.0, normalize=False, epsilon=0.0,
       direction="forward", p_kind=None, q_kind=None):
    """Kullback–Leibler divergence D(P‖Q) = Σ p·log(p/q) along an axis.

    Parameters
    ----------
    p, q : array_like
        Distributions along ``axis``; the other axes broadcast against each
        other. Any float dtype, lists, CPU torch tensors.
    {options}
    epsilon : float, optional
        Added to every probability of P and Q before renormalising (smoothing,
        so that q = 0 no longer makes D infinite). Default 0.
    direction : {{'forward', 'reverse'}}, optional
        'reverse' gives D(Q‖P). Default 'forward'.
    p_kind, q_kind : {{'probs', 'logprobs', 'logits'}}, optional
        The kind of one side, overriding ``kind``.

    Returns
    -------
    numpy.float64 or ndarray
        D in nats (or ``base``), of the broadcast shape without ``axis``; a
        0-d ``numpy.float64`` for one pair of distributions. +inf where p > 0
        and q = 0; terms with p = 0 contribute 0.

    Raises
    ------
    ValueError
        A row that is not a distribution of ``kind`` (the message names the
        row, counted in C order over the other axes), or shapes that do not
        pair (:class:`~klcli.errors.InputError`, :class:`~klcli.errors.UsageError`).
    TypeError
        An argument of the wrong type, e.g. a string for ``p``.

    See Also
    --------
    scipy.stats.entropy : ``entropy(p, q)`` is D(P‖Q) in nats.

    Examples
    --------
    >>> float(kl([0.5, 0.5], [0.9, 0.1]))  # log(5/3)
    0.5108256237659907
    >>> float(kl([1.0, 0.0], [0.5, 0.5], base=2))  # one bit; 0·log 0 = 0
    1.0
    >>> float(kl([0.5, 0.5], [1.0, 0.0]))
    inf
    >>> kl([[0.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]], kind="logits", axis=0).round(12).tolist()
    [0.0, 0.46211715726]
    """
    scale = _log_base(base)
    direction = _choice(direction, "direction", _DIRECTIONS)
    p_rows, q_rows, batch, outcomes = _pair(p, q, kind=kind, p_kind=p_kind, q_kind=q_kind, axis=axis,
                                            temperature=temperature, normalize=normalize, epsilon=epsilon)
    sides = (q_rows, p_rows) if direction == "reverse" else (p_rows, q_rows)
    return _per_row(kl_rows, sides, batch, outcomes, scale)


def cross_entropy(p, q, *, kind="probs", axis=-1, base=None, temperature=1.0, normalize=False, epsilon=0.0,
                  direction="forward", p_kind=None, q_kind=None):
    """Cross-entropy H(P, Q) = −Σ p·log q along an axis.

    Computed as H(P) + D(P‖Q), as ``klcli xent`` does: the divergence taken
    directly keeps its digits when both entropies are large and nearly equal.

    Parameters
    ----------
    p, q : array_like
        Distributions along ``axis``; the other axes broadcast.
    {options}
    epsilon : float, optional
        Added to every probability of P and Q before renormalising. Default 0.
    direction : {{'forward', 'reverse'}}, optional
        'reverse' gives H(Q, P). Default 'forward'.
    p_kind, q_kind : {{'probs', 'logprobs', 'logits'}}, optional
        The kind of one side, overriding ``kind``.

    Returns
    -------
    numpy.float64 or ndarray
        H(P, Q) in nats (or ``base``); +inf where p > 0 and q = 0.

    Examples
    --------
    >>> round(float(cross_entropy([0.5, 0.5], [0.25, 0.75])), 12)  # ½ln4 + ½ln(4/3)
    0.836988216786
    >>> float(cross_entropy([0.5, 0.5], [0.5, 0.5], base=2))
    1.0
    """
    scale = _log_base(base)
    direction = _choice(direction, "direction", _DIRECTIONS)
    p_rows, q_rows, batch, outcomes = _pair(p, q, kind=kind, p_kind=p_kind, q_kind=q_kind, axis=axis,
                                            temperature=temperature, normalize=normalize, epsilon=epsilon)
    sides = (q_rows, p_rows) if direction == "reverse" else (p_rows, q_rows)
    return _per_row(lambda first, second: entropy_rows(first) + kl_rows(first, second), sides, batch,
                    outcomes, scale)


def entropy(p, *, kind="probs", axis=-1, base=None, temperature=1.0, normalize=False):
    """Shannon entropy H(P) = −Σ p·log p along an axis.

    Parameters
    ----------
    p : array_like
        Distributions along ``axis``.
    {options}

    Returns
    -------
    numpy.float64 or ndarray
        H(P) in nats (or ``base``), of p's shape without ``axis``.

    See Also
    --------
    scipy.stats.entropy : the same figure (with ``normalize=True`` semantics).

    Examples
    --------
    >>> float(entropy([0.25, 0.25, 0.25, 0.25]))  # log 4
    1.3862943611198906
    >>> entropy([[1, 1], [1, 3]], normalize=True, base=2).round(12).tolist()
    [1.0, 0.811278124459]
    """
    scale = _log_base(base)
    kind = _choice(kind, "kind", KINDS)
    values = _along(_array(p, "p"), axis, "p")
    batch = values.shape[:-1]
    if math.prod(batch) == 0:
        return _shaped(np.zeros(0), batch)
    rows = _log_rows(values, "p", kind, batch, temperature=_temperature(temperature),
                     normalize=_flag(normalize, "normalize"))
    return _per_row(entropy_rows, (rows,), batch, values.shape[-1], scale)


def js(p, q, *, weights=(0.5, 0.5), distance=False, kind="probs", axis=-1, base=None, temperature=1.0,
       normalize=False, epsilon=0.0, p_kind=None, q_kind=None):
    """Jensen–Shannon divergence π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q, along an axis.

    Parameters
    ----------
    p, q : array_like
        Distributions along ``axis``; the other axes broadcast.
    weights : (float, float), optional
        π1, π2 ≥ 0 summing to 1; (β, 1 − β) is the generalised JSD of GKD
        distillation. Default (0.5, 0.5).
    distance : bool, optional
        Return the JS distance √JSD (a metric) instead, as
        ``scipy.spatial.distance.jensenshannon`` does. Default False.
    {options}
    epsilon : float, optional
        Added to every probability of P and Q before renormalising. Default 0.
    p_kind, q_kind : {{'probs', 'logprobs', 'logits'}}, optional
        The kind of one side, overriding ``kind``.

    Returns
    -------
    numpy.float64 or ndarray
        The divergence (at most log 2 nats, or 1 bit, for equal weights) or
        the distance; never NaN for nearly identical inputs (it is clamped at
        0 before the square root).

    Examples
    --------
    >>> float(js([1.0, 0.0], [0.0, 1.0]))  # the maximum, log 2
    0.6931471805599453
    >>> float(js([1.0, 0.0], [0.0, 1.0], base=2, distance=True))
    1.0
    >>> float(js([0.3, 0.7], [0.3, 0.7]))
    0.0
    """
    scale = _log_base(base)
    pair = _weights(weights)
    distance = _flag(distance, "distance")
    p_rows, q_rows, batch, outcomes = _pair(p, q, kind=kind, p_kind=p_kind, q_kind=q_kind, axis=axis,
                                            temperature=temperature, normalize=normalize, epsilon=epsilon)
    divergence = _per_row(lambda first, second: js_rows(first, second, pair), (p_rows, q_rows), batch,
                          outcomes, scale)
    return np.sqrt(np.maximum(divergence, 0.0)) if distance else divergence


for _function in (kl, cross_entropy, entropy, js):
    if _function.__doc__:  # (python -OO strips docstrings)
        _function.__doc__ = _function.__doc__.format(options=_ROW_OPTIONS)


# --- log space ----------------------------------------------------------------


def _gathered(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``values`` with ``axes`` moved last and merged into one."""
    moved = np.moveaxis(values, axes, tuple(range(values.ndim - len(axes), values.ndim)))
    return moved.reshape(moved.shape[: values.ndim - len(axes)] + (-1,))


def logsumexp(a, *, axis=-1, b=None, keepdims=False):
    """``log(sum(b·exp(a)))`` along an axis, computed stably (max-shifted), in float64.

    Parameters
    ----------
    a : array_like
        Values in log space; ``-inf`` entries contribute nothing.
    axis : int, tuple of ints or None, optional
        The axis or axes summed over; None for all. Default -1 (unlike
        ``scipy.special.logsumexp``, whose default is None).
    b : array_like, optional
        Non-negative weights, broadcast against ``a`` (``scipy.special.logsumexp``'s
        ``b``, without ``return_sign``).
    keepdims : bool, optional
        Keep the summed axes with size 1. Default False.

    Returns
    -------
    numpy.float64 or ndarray
        ``-inf`` where every term is ``-inf`` (or has weight 0).

    Examples
    --------
    >>> float(logsumexp([1000.0, 1000.0]))  # 1000 + log 2, no overflow
    1000.6931471805599
    >>> logsumexp([[0.0, -np.inf], [-np.inf, -np.inf]]).tolist()
    [0.0, -inf]
    >>> float(logsumexp([0.0, 0.0], b=[0.5, 0.5]))
    0.0
    """
    values = np.asarray(_array(a, "a"), dtype=np.float64)
    if b is not None:
        weights = np.asarray(_array(b, "b"), dtype=np.float64)
        if np.any(weights < 0) or np.isnan(weights).any():
            raise UsageError("b must hold weights >= 0 (klcli's logsumexp returns no sign)")
        try:
            values, weights = np.broadcast_arrays(values, weights)
        except ValueError:
            raise ShapeError(f"b of shape {weights.shape} does not broadcast against a of shape {values.shape}") \
                from None
        with np.errstate(divide="ignore"):
            values = np.where(weights == 0, -np.inf, values + np.log(weights))
    axes = _axes(axis, values.ndim) if values.ndim else ()
    keepdims = _flag(keepdims, "keepdims")
    if values.ndim == 0:
        return values[()]
    gathered = _gathered(values, axes)
    if gathered.shape[-1] == 0:
        total = np.full(gathered.shape[:-1], -np.inf)
    else:
        total = _logsumexp_rows(gathered)
    if keepdims:
        total = total.reshape(tuple(1 if i in axes else size for i, size in enumerate(values.shape)))
    return _shaped(total, np.shape(total))


def log_softmax(x, *, axis=-1, temperature=1.0):
    """``log_softmax(x / temperature)`` along an axis, in float64.

    Never computed as ``log(softmax(x))``: the max-shifted values minus their
    logsumexp stay finite for logits of any magnitude.

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, tuple of ints or None, optional
        The axis (or axes, or None for all) the distribution lies along.
        Default -1 (``scipy.special.log_softmax``'s default is None).
    temperature : float, optional
        Divides the logits first. Default 1.

    Returns
    -------
    ndarray
        Log-probabilities, of x's shape, in float64.

    Examples
    --------
    >>> np.exp(log_softmax([0.0, np.log(3.0)])).round(12).tolist()
    [0.25, 0.75]
    >>> log_softmax(np.array([1e4, -1e4], dtype=np.float16)).tolist()
    [0.0, -20000.0]
    >>> log_softmax([[0.0, 0.0], [0.0, 0.0]], axis=0).round(12).tolist()
    [[-0.69314718056, -0.69314718056], [-0.69314718056, -0.69314718056]]
    """
    values = _array(x, "x")
    temperature = _temperature(temperature)
    if values.ndim == 0:
        return np.float64(0.0) if np.isfinite(values) else np.float64(np.nan)
    axes = _axes(axis, values.ndim)
    gathered = _gathered(values, axes)
    if gathered.shape[-1] == 0:
        return np.asarray(values, dtype=np.float64)
    result = _log_softmax_rows(gathered, temperature)
    kept = [size for i, size in enumerate(values.shape) if i not in axes]
    moved = result.reshape(tuple(kept) + tuple(values.shape[i] for i in axes))
    return np.moveaxis(moved, tuple(range(len(kept), values.ndim)), axes)


def summarize(values) -> dict:
    """The summary klcli reports over per-row values (SPEC §4).

    Parameters
    ----------
    values : array_like
        Any shape; flattened.

    Returns
    -------
    dict
        ``count``, ``mean``, ``std`` (sample, n−1), ``stderr`` (std/√n),
        ``min``, the percentiles ``p0_1 p1 p5 p10 p25 median p75 p90 p95 p99 p99_9``
        (linear interpolation at fraction·(n−1), NumPy's default), ``max``
        and ``argmax`` (the flat index of the maximum). Undefined figures
        (the spread of one value, or of values including inf) are None.

    Examples
    --------
    >>> s = summarize([1.0, 2.0, 3.0, 4.0])
    >>> s["count"], s["mean"], round(s["std"], 12), s["median"], s["max"], s["argmax"]
    (4, 2.5, 1.290994448736, 2.5, 4.0, 3)
    """
    return _summarize(np.asarray(_array(values, "values"), dtype=np.float64).reshape(-1))


# --- perplexity -----------------------------------------------------------------


class PerplexityResult(NamedTuple):
    """What :func:`perplexity` returns (a named tuple, as ``scipy.stats`` results are)."""

    perplexity: float
    """Corpus perplexity exp(Σ NLL / Σ tokens), what llama.cpp and PyTorch report."""
    nll: float
    """Mean negative log-likelihood per counted token, in nats."""
    tokens: int
    """Tokens counted (ignored positions and padding left out)."""
    sequences: int
    """Sequences with at least one counted token."""
    per_sequence: np.ndarray
    """Each sequence's own perplexity, in input order; NaN for a sequence with no counted token."""


def _token_rows(logits: np.ndarray, ids: np.ndarray, *, temperature: float, ignore_index: int):
    """Per-position losses of the counted tokens and the position of each, block by block (bounded memory)."""
    from klcli.io.source import rows_per_block

    rows = logits.reshape(-1, logits.shape[-1])
    step = rows_per_block(rows.shape[1])
    losses, positions = [], []
    for start in range(0, rows.shape[0], step):
        loss, counted = token_nll(rows[start : start + step], ids[start : start + step], temperature=temperature,
                                  ignore_index=ignore_index, label="logits", first_position=start)
        losses.append(loss[counted])
        positions.append(start + np.flatnonzero(counted))
    return np.concatenate(losses), np.concatenate(positions)


def perplexity(logits, labels=None, *, kind="logits", ignore_index=IGNORE_INDEX, shift=False,
               temperature=1.0) -> PerplexityResult:
    """Perplexity exp(mean NLL per token) from logits and labels, or from the tokens' log-probabilities.

    The semantics are ``klcli perplexity``'s.

    Parameters
    ----------
    logits : array_like
        With ``kind='logits'``: shape (T, V) — one sequence of T positions
        over a vocabulary of V — or (B, T, V), B sequences (more leading axes
        are more sequences). With ``kind='logprobs'`` (or 'probs'): the
        observed tokens' log-probabilities (probabilities), 1-D for one
        sequence or 2-D for one sequence per row, padded with NaN.
    labels : array_like of int, optional
        The observed token ids, of the logits' leading shape (or flat);
        required with ``kind='logits'``, not allowed otherwise.
    kind : {'logits', 'logprobs', 'probs'}, optional
        Default 'logits'.
    ignore_index : int, optional
        Labels equal to it are not counted (PyTorch's default -100).
    shift : bool, optional
        Causal-LM alignment: position t is scored against label t + 1 of the
        same sequence, and each sequence's last position is not counted
        (Hugging Face's ``logits[:, :-1]`` against ``labels[:, 1:]``).
    temperature : float, optional
        Divides the logits before the softmax. Default 1.

    Returns
    -------
    PerplexityResult
        ``perplexity`` (corpus: exp of the mean NLL over every counted token,
        always of the nats value), ``nll`` (mean per token, nats),
        ``tokens``, ``sequences`` (with at least one counted token) and
        ``per_sequence`` (each sequence's perplexity; NaN where none counted).

    Raises
    ------
    ValueError
        Labels outside the vocabulary or of the wrong shape, invalid
        log-probabilities, or no token counted at all.
    TypeError
        ``labels`` missing with ``kind='logits'``, or an argument of the wrong type.

    Examples
    --------
    >>> result = perplexity([[0.0, 0.0], [0.0, np.log(3.0)]], [0, 1])  # p = ½, then ¾
    >>> round(result.perplexity, 12), round(result.nll, 12), result.tokens  # √(8/3), ½ ln(8/3)
    (1.632993161855, 0.490414626506, 2)
    >>> r = perplexity(np.log([[0.5, 0.5, np.nan], [0.25, 0.25, 0.25]]), kind="logprobs")
    >>> r.per_sequence.tolist(), r.tokens, r.sequences
    ([2.0, 4.0], 5, 2)
    """
    kind = _choice(kind, "kind", _TOKEN_KINDS)
    temperature = _temperature(temperature)
    shift = _flag(shift, "shift")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise ArgumentTypeError(f"ignore_index must be an integer, not {type(ignore_index).__name__}") from None
    values = _array(logits, "logits" if kind == "logits" else kind)
    if kind != "logits":
        if labels is not None:
            raise UsageError(f"labels go with kind='logits'; kind={kind!r} values are already the observed tokens' "
                             + ("log-probabilities" if kind == "logprobs" else "probabilities"))
        if shift or temperature != 1.0:
            raise UsageError(f"{'shift' if shift else 'temperature'} applies to logits with labels, not to "
                             f"kind={kind!r} values")
        return _perplexity_of_tokens(values, kind)
    if labels is None:
        raise ArgumentTypeError("perplexity() needs labels (the observed token ids) with kind='logits'; for the "
                                "tokens' log-probabilities pass kind='logprobs'")
    if values.ndim < 2 or values.shape[-1] == 0:
        raise ShapeError(f"logits need a vocabulary axis: shape (T, V) or (B, T, V), got {values.shape}")
    ids = np.asarray(_labels(labels))
    leading = values.shape[:-1]
    if ids.shape != leading and not (ids.ndim == 1 and ids.size == math.prod(leading)):
        raise ShapeError(f"labels have shape {ids.shape} but the logits have shape {values.shape}; labels need the "
                         f"logits' leading shape {leading}")
    ids = as_token_ids(ids, label="labels", first_position=0)
    length = leading[-1] if values.ndim >= 3 else None
    if shift:
        from klcli.core.perplexity import shifted_labels

        ids = np.concatenate(list(shifted_labels([ids], length, ignore_index)))
    losses, positions = _token_rows(values, ids, temperature=temperature, ignore_index=ignore_index)
    sequences = math.prod(leading[:-1]) if length else 1
    return _perplexity_result(losses, positions // length if length else np.zeros_like(positions), sequences,
                              f"every label is ignore_index={ignore_index}")


def _labels(labels) -> np.ndarray:
    if labels is None or isinstance(labels, (str, bytes, dict, set)):
        raise ArgumentTypeError(f"labels must be an array of token ids, not {type(labels).__name__}")
    if type(labels).__module__.split(".")[0] == "torch" and hasattr(labels, "detach"):
        labels = labels.detach().cpu()
    array = np.asarray(labels)
    if array.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"labels must hold integer token ids, not dtype {array.dtype}")
    return array


def _perplexity_of_tokens(values: np.ndarray, kind: str) -> PerplexityResult:
    """``kind='logprobs'``/``'probs'``: the observed tokens' values, one sequence per row (NaN is padding)."""
    from klcli.commands.perplexity import _token_losses

    if values.ndim == 0:
        raise ShapeError(f"{kind}: expected one value per token (1-D, or 2-D padded with NaN), got a single number")
    padded = values.ndim >= 2
    rows = values.reshape(-1, values.shape[-1]) if padded else values.reshape(1, -1)
    losses = _token_losses(rows, kind, kind, 0, padded)
    counted = ~np.isnan(losses)
    row_of = np.broadcast_to(np.arange(rows.shape[0])[:, None], rows.shape)
    return _perplexity_result(losses[counted], row_of[counted], rows.shape[0], "every value is padding")


def _perplexity_result(losses: np.ndarray, sequence_of: np.ndarray, sequences: int, why: str) -> PerplexityResult:
    if losses.size == 0:
        raise InputError(f"no tokens were counted ({why}); there is nothing to score")
    sums = np.bincount(sequence_of, weights=losses, minlength=sequences)
    counts = np.bincount(sequence_of, minlength=sequences)
    total, tokens = float(np.sum(losses)), int(losses.size)
    return PerplexityResult(perplexity=corpus_perplexity(total, tokens), nll=float(np.mean(losses)), tokens=tokens,
                            sequences=int(np.count_nonzero(counts)), per_sequence=sequence_perplexities(sums, counts))


# --- Gaussians -----------------------------------------------------------------


class _Gaussian(NamedTuple):
    """One side: its mean, and either log-variances (diagonal) or a covariance's Cholesky factor."""

    mu: np.ndarray
    logvar: np.ndarray | None
    chol: np.ndarray | None  # (..., k, k), leading axes as given
    spread: str  # how messages name it: "sigma1", "cov2"
    # The covariance as given (float64): nearly equal covariances' difference is formed from these, not from
    # L·Lᵀ, whose rounding would swamp it (core.gaussian.kl_full).
    cov: np.ndarray | None = None


def _gaussian(index: int, mu, sigma, var, logvar, cov) -> _Gaussian:
    from klcli.core.gaussian import cholesky, log_variance

    given = [(name, value) for name, value in (("sigma", sigma), ("var", var), ("logvar", logvar), ("cov", cov))
             if value is not None]
    if len(given) > 1:
        names = " and ".join(f"{name}{index}" for name, _ in given)
        raise UsageError(f"{names} both set the spread of the same Gaussian; give one of them")
    mu = np.asarray(_array(mu, f"mu{index}"), dtype=np.float64)
    if not given:  # as the CLI: unit variance
        return _Gaussian(mu, np.zeros(()), None, f"sigma{index}")
    name, values = given[0]
    option = f"{name}{index}"
    values = np.asarray(_array(values, option), dtype=np.float64)
    if name != "cov":
        flat = values.reshape(1, -1) if values.ndim <= 1 else values.reshape(-1, values.shape[-1])
        return _Gaussian(mu, log_variance(flat, name, label=option).reshape(values.shape), None, option)
    if values.ndim < 2 or values.shape[-1] != values.shape[-2]:
        raise ShapeError(f"{option}: a covariance is (k, k) or (n, k, k), got shape {values.shape}")
    size = values.shape[-1]
    chol = cholesky(values.reshape(-1, size, size), label=option).reshape(values.shape)
    return _Gaussian(mu, None, chol, option, values)


def gaussian_kl(mu1, mu2, *, sigma1=None, sigma2=None, var1=None, var2=None, logvar1=None, logvar2=None, cov1=None,
                cov2=None, direction="forward", base=None):
    """Closed-form D(N(μ1, Σ1) ‖ N(μ2, Σ2)) between Gaussians (``klcli gaussian``).

    Each side's spread is given one way, or not at all for unit variance:
    ``sigma`` (standard deviations), ``var`` (variances), ``logvar``
    (log-variances; nearly equal variances keep their digits) or ``cov``
    (a full covariance).

    Parameters
    ----------
    mu1, mu2 : array_like
        The means: scalars (univariate), vectors of k (one k-dimensional
        Gaussian) or (n, k) arrays (n Gaussians); they broadcast against each
        other and against the spreads, as NumPy broadcasts.
    sigma1, sigma2, var1, var2, logvar1, logvar2 : array_like, optional
        A diagonal covariance, of the means' shape (or broadcasting to it).
    cov1, cov2 : array_like, optional
        A full covariance (k, k), or (n, k, k) for n Gaussians; symmetric
        positive definite (checked by a Cholesky factorisation).
    direction : {'forward', 'reverse'}, optional
        'reverse' gives D(Q‖P), Q the second Gaussian. Default 'forward'.
    base : float, optional
        The logarithm's base; None (the default) for nats.

    Returns
    -------
    numpy.float64 or ndarray
        One KL per Gaussian pair, summed over the k dimensions: 0-d for
        scalars, a vector of k or a (k, k) covariance; shape (n,) for n pairs.

    Raises
    ------
    ValueError
        Two spreads for one side, a σ or variance <= 0, a covariance that is
        not symmetric positive definite, shapes that do not broadcast.

    Examples
    --------
    >>> # N(0, 1) ‖ N(1, 2²): log 2 + (1 + 1)/8 − ½
    >>> round(float(gaussian_kl(0.0, 1.0, sigma1=1.0, sigma2=2.0)), 12)
    0.44314718056
    >>> gaussian_kl([[0.0, 0.0], [1.0, 1.0]], [0.0, 0.0]).tolist()  # ½‖μ1 − μ2‖² per row
    [0.0, 1.0]
    >>> float(gaussian_kl([0.0, 0.0], [1.0, 1.0], cov1=np.eye(2), cov2=np.eye(2)))
    1.0
    """
    scale = _log_base(base)
    direction = _choice(direction, "direction", _DIRECTIONS)
    first = _gaussian(1, mu1, sigma1, var1, logvar1, cov1)
    second = _gaussian(2, mu2, sigma2, var2, logvar2, cov2)
    if direction == "reverse":
        first, second = second, first
    if first.chol is None and second.chol is None:
        return _gaussian_diagonal(first, second) / scale
    return _gaussian_full(first, second) / scale


def _gaussian_diagonal(first: _Gaussian, second: _Gaussian):
    from klcli.core.gaussian import kl_diagonal

    try:
        mu1, logvar1, mu2, logvar2 = np.broadcast_arrays(first.mu, first.logvar, second.mu, second.logvar)
    except ValueError:
        shapes = ", ".join(f"{name} {np.shape(a)}" for name, a in (
            ("mu1", first.mu), (first.spread, first.logvar), ("mu2", second.mu), (second.spread, second.logvar)))
        raise ShapeError(f"the parameters' shapes do not broadcast against each other: {shapes}") from None
    if mu1.ndim == 0:  # univariate: one dimension
        return _shaped(kl_diagonal(mu1[None], logvar1[None], mu2[None], logvar2[None]), ())
    return _shaped(kl_diagonal(mu1, logvar1, mu2, logvar2), mu1.shape[:-1])


def _gaussian_full(first: _Gaussian, second: _Gaussian):
    from klcli.core.gaussian import kl_full

    sizes = {side.spread: side.chol.shape[-1] for side in (first, second) if side.chol is not None}
    if len(set(sizes.values())) > 1:
        (a, k_a), (b, k_b) = sizes.items()
        raise ShapeError(f"{a} is {k_a}×{k_a} but {b} is {k_b}×{k_b}; both Gaussians need the same dimensions")
    k = next(iter(sizes.values()))
    leading = []
    for name, array in (("mu1", first.mu), ("mu2", second.mu), (first.spread, first.logvar),
                        (second.spread, second.logvar)):
        if array is None:
            continue
        if array.ndim and array.shape[-1] not in (1, k):
            raise ShapeError(f"{name} has {array.shape[-1]} dimensions but the covariance is {k}×{k}")
        leading.append(array.shape[:-1])
    leading += [side.chol.shape[:-2] for side in (first, second) if side.chol is not None]
    try:
        batch = np.broadcast_shapes(*leading)
    except ValueError:
        raise ShapeError(f"the parameters' leading shapes {leading} do not broadcast against each other") from None
    n = math.prod(batch)

    def factor(side: _Gaussian) -> tuple[np.ndarray, np.ndarray]:
        """The side's Cholesky factor and covariance, (n, k, k) each."""
        if side.chol is not None and side.cov is not None:
            return (np.broadcast_to(side.chol, batch + (k, k)).reshape(n, k, k),
                    np.broadcast_to(side.cov, batch + (k, k)).reshape(n, k, k))
        eye = np.eye(k)
        logvar = np.broadcast_to(side.logvar, batch + (k,)).reshape(n, k)
        return np.exp(0.5 * logvar)[:, :, None] * eye, np.exp(logvar)[:, :, None] * eye

    means = [np.broadcast_to(side.mu, batch + (k,)).reshape(n, k) for side in (first, second)]
    (chol1, cov1), (chol2, cov2) = factor(first), factor(second)
    return _shaped(kl_full(means[0], chol1, means[1], chol2, cov1, cov2), batch)


# --- files ------------------------------------------------------------------------


def read(operand):
    """The array an operand holds, as the CLI reads it: a file, ``FILE:SELECTOR``, ``-`` or inline numbers.

    Parameters
    ----------
    operand : str or os.PathLike
        A file path; ``FILE:SELECTOR`` (an ``.npz`` key, a safetensors
        tensor, a table's column(s)); ``'-'`` for standard input; or inline
        numbers such as ``'0.1,0.9;0.5,0.5'``.

    Returns
    -------
    ndarray
        In the shape stored, by format:

        - ``.npy``: a read-only memory map, in its stored dtype (pickles refused);
        - safetensors: a read-only memory map of the tensor; bfloat16 as a
          float32 copy (exact);
        - ``.npz``: the member array, read into memory;
        - CSV/TSV, Parquet, Arrow/Feather: float64 rows × the numeric columns
          (or the list column's vectors; one column selected: a 1-D vector);
        - a klcli top-K reference file: an error (read a tensor, ``FILE:top_ids`` …);
        - llama.cpp KL-divergence base files: the decoded log-probabilities,
          float64 (rows, n_vocab) (the tokens they carry are not returned);
        - OpenAI-style logprobs JSON/JSONL: the sampled tokens'
          log-probabilities, float64 (sequences, longest), padded with NaN;
        - inline numbers: float64, 1-D for one row;
        - shards (a glob such as ``"logits/part-*.npy"``, or a directory): the
          shards' arrays concatenated along their first axis, in natural order
          (1-D shards as one vector), read into memory.

    Raises
    ------
    ValueError
        A missing, unreadable or invalid file (:class:`~klcli.errors.InputError`).

    Examples
    --------
    >>> read("0.1,0.9;0.5,0.5").tolist()
    [[0.1, 0.9], [0.5, 0.5]]
    """
    if isinstance(operand, os.PathLike):
        operand = os.fspath(operand)
    if not isinstance(operand, str):
        raise ArgumentTypeError(f"operand must be a path or an operand string, not {type(operand).__name__}")
    from klcli.io.operand import open_operand, whole_array

    source = open_operand(operand)
    if source.reference is not None:  # its packed rows are no array of the file's; its tensors are
        from klcli.errors import InputError

        raise InputError(f"{source.path}: is a klcli top-K reference file; read one of its tensors as "
                         f"{source.path}:top_ids, :top_logprobs, :tail_logprob (and :labels, :label_logprob)")
    return source.array() if source.array is not None else whole_array(source)
