"""Token negative log-likelihoods and perplexity.

Per-token NLL from logits is ``logsumexp(z/T) − z[label]/T`` in float64: the
normaliser is formed stably and the label's logit read directly, never
``log(softmax(z))``. Perplexity is always ``exp`` of the mean NLL in nats
(SPEC §1), whatever base the other figures are reported in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from klcli.core.fast import log_normaliser
from klcli.core.logspace import LogRows, as_log_rows
from klcli.core.positions import kept_log_rows
from klcli.errors import InputError

IGNORE_INDEX = -100  # PyTorch's default ignore_index
# The note of every command whose perplexity comes out infinite.
INF_PERPLEXITY = "perplexity is inf: a token has probability 0 (or a loss beyond float range)"


def as_token_ids(values: np.ndarray, *, label: str, first_position: int) -> np.ndarray:
    """Labels as int64 token ids; non-integers are an error naming the position.

    Examples
    --------
    >>> as_token_ids(np.array([1.0, 2.0]), label="ids", first_position=0).tolist()
    [1, 2]
    """
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind in "iu":
        return flat.astype(np.int64, copy=False)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InputError(f"{label}: position {first_position + index} holds {float(flat[index])!r}; "
                         "labels must be integer token ids")
    return flat.astype(np.int64)


def token_nll(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    label: str = "logits",
    first_position: int = 0,
    kind: str = "logits",
    fast: bool = False,
    as_stored_below: float | None = None,
    reference: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-position cross-entropy of ``labels`` under ``softmax(logits / T)``, in nats.

    With ``label_smoothing`` ε the loss is PyTorch's:
    (1 − ε)·NLL + ε·mean over the vocabulary of −log p. ``fast`` (``--precision
    fast``) forms log Σ e^z in float32 arithmetic for float32 or float16 logits
    (see :func:`klcli.core.fast.log_normaliser`); other inputs ignore it.
    ``as_stored_below`` is passed to :func:`~klcli.core.logspace.as_log_rows`.

    Returns
    -------
    loss : ndarray, shape (n,)
        The loss at every position (0 where ignored).
    counted : ndarray of bool, shape (n,)
        False where the label equals ``ignore_index``; those rows of ``logits`` are not read (padding
        may hold anything, NaN included).

    Examples
    --------
    >>> loss, counted = token_nll(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]), np.array([0, 1]))
    >>> np.round(loss, 12).tolist(), counted.tolist()  # ln 2, ln(4/3)
    ([0.69314718056, 0.287682072452], [True, True])
    """
    counted = labels != ignore_index
    loss = np.zeros(labels.shape[0])
    if not counted.any():
        return loss, counted

    def convert(values: np.ndarray, first_row: int) -> LogRows:
        return as_log_rows(values, kind, label=label, first_row=first_row, temperature=temperature,
                           fast=fast and not label_smoothing, as_stored_below=as_stored_below, reference=reference)

    # Ignored positions (padding) are never read as logits: they may hold anything, NaN included.
    rows = kept_log_rows(convert, np.asarray(logits), None if counted.all() else counted, first_position)
    if rows.fast:  # --precision fast: log Z in float32 arithmetic, unless a row leaves its safe range
        log_mass, error = log_normaliser(rows.shifted)
        rows = LogRows(rows.shifted, log_mass) if np.all(np.isfinite(error)) else rows.precise()
    at = np.flatnonzero(counted)
    chosen = labels[at]
    if hasattr(rows, "label_logprob"):  # a top-K reference (ReferenceRows): the labels' log-probabilities are stored
        loss[at] = -rows.label_logprob(chosen, first_position + at)
        return loss, counted
    vocab = rows.shifted.shape[1]
    outside = (chosen < 0) | (chosen >= vocab)
    if outside.any():
        index = int(at[np.flatnonzero(outside)[0]])
        raise InputError(f"{label}: the label at position {first_position + index} is {int(labels[index])}, outside "
                         f"the vocabulary [0, {vocab})", hint=f"ignored positions use --ignore-index {ignore_index}",
                         api_hint=f"ignored positions use ignore_index={ignore_index}", form="{message} ({hint})")
    # log p[label] = z[label] − log Σ e^z: the label's logit read directly, never log(softmax(z)).
    kept_loss = rows.offset - rows.shifted[np.arange(rows.rows), chosen]
    if label_smoothing:
        uniform = rows.offset - np.mean(rows.shifted, axis=1, dtype=np.float64)
        kept_loss = (1.0 - label_smoothing) * kept_loss + label_smoothing * uniform
    loss[at] = kept_loss
    return loss, counted


def shifted_labels(blocks: Iterable[np.ndarray], positions: int | None, ignore_index: int) -> Iterator[np.ndarray]:
    """Labels for a causal LM's logits: position t is scored against label t+1.

    The last position of every sequence of ``positions`` tokens (and of the
    whole stream) has no next token and gets ``ignore_index``, as in the
    Hugging Face convention ``logits[:, :-1]`` against ``labels[:, 1:]``.

    Examples
    --------
    >>> [b.tolist() for b in shifted_labels([np.array([1, 2, 3]), np.array([4, 5, 6])], 3, -100)]
    [[2, 3], [-100, 5, 6], [-100]]
    """
    position = 0
    started = False
    for block in blocks:
        flat = np.asarray(block).reshape(-1)
        if not started:
            flat, started = flat[1:], True
        out = flat.copy()
        if positions:
            at = position + np.arange(out.size)
            out[(at + 1) % positions == 0] = ignore_index
        position += out.size
        yield out
    if started:
        yield np.array([ignore_index], dtype=np.int64)


def sequence_perplexities(nll_sums: np.ndarray, token_counts: np.ndarray) -> np.ndarray:
    """exp(mean NLL) of each sequence; NaN for a sequence with no counted tokens.

    Examples
    --------
    >>> sequence_perplexities(np.array([2 * math.log(2), 0.0]), np.array([2, 0])).tolist()
    [2.0, nan]
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.exp(nll_sums / token_counts)


def corpus_perplexity(nll_total: float, tokens: int) -> float:
    """exp(Σ NLL / Σ tokens), the NLL in nats.

    Examples
    --------
    >>> corpus_perplexity(3 * math.log(4), 3)
    4.0
    >>> corpus_perplexity(2e4, 1)  # beyond float range: inf, not an OverflowError
    inf
    """
    return perplexity_of(nll_total / tokens)


def perplexity_of(mean_nll: float) -> float:
    """exp(mean NLL in nats), +inf where that exceeds the float range (a mean NLL above ≈ 709.78).

    Also for ratios of perplexities, exp(Δ mean NLL), which may overflow the same way.

    Examples
    --------
    >>> perplexity_of(math.log(3.0)), perplexity_of(710.0), perplexity_of(-800.0)
    (3.0000000000000004, inf, 0.0)
    """
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf
