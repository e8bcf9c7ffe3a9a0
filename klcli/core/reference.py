"""Top-K reference distributions: a base model's K most probable tokens and one tail bucket.

A reference row keeps, of a distribution over V tokens, the K most probable
ids (ties by lowest id), their log-probabilities, and the log of the rest of
the mass, log Σ_{i ∉ top} p_i, formed as a log-sum-exp over the rest (never as
log(1 − Σ p_top), which cancels when the top holds nearly all the mass). So it
is an exact distribution over the partition {the K tokens} ∪ {the tail}.

Comparing with a full distribution Q means mapping Q onto the same partition:
q at the K ids, and Q's own tail summed over the complement by masking. By the
data-processing inequality every f-divergence (KL both ways, JS, TV) on the
partition is a lower bound of the full-vocabulary one, equal when K = V.

In blocks, reference rows travel packed as float64 rows of
``[ids (K), log p at the ids (K), log p_tail, label, log p(label)]`` (the last
two only with labels): a row layout the engine can cut and broadcast like any
other, and exact for ids below 2⁵³.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from klcli.core.logspace import LogRows, as_log_rows, logsumexp, unit_sum_misses
from klcli.errors import InputError

_SEGMENTS_UP_TO = 64


def top_k_ids(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's k largest entries' indices, largest first, ties by the lowest index (int64).

    Up to k = 64, compare's segment-maxima top-k (one pass, no partition);
    above, one ``np.partition`` finds each row's k-th largest value t: every
    entry above t is in, and entries equal to t fill the rest in index order.
    Both give the same ids (a test holds them to a full sort).

    Examples
    --------
    >>> top_k_ids(np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 0.0]]), 2).tolist()
    [[1, 2], [0, 1]]
    """
    values = np.asarray(values)
    rows, vocab = values.shape
    k = min(k, vocab)
    if k <= _SEGMENTS_UP_TO:  # measured: 10× faster than the partition at K = 16, 3.5× at 64, slower at 256
        from klcli.core.compare import top_k

        return top_k(values, k).astype(np.int64)
    if k == vocab:
        threshold = np.min(values, axis=1)
    else:
        threshold = np.partition(values, vocab - k, axis=1)[:, vocab - k]
    row, column = np.nonzero(values >= threshold[:, None])
    value = values[row, column]
    order = np.lexsort((column, -value, row))
    row, column = row[order], column[order]
    rank = np.arange(row.size) - np.searchsorted(row, np.arange(rows))[row]
    return column[rank < k].reshape(rows, k).astype(np.int64)


def complement_log_mass(rows: LogRows, ids: np.ndarray) -> np.ndarray:
    """log Σ_{i ∉ ids} p_i per row, summed over the complement itself (masked), never as 1 − Σ p_ids.

    ``ids`` may have more rows than ``rows`` when ``rows`` is a single broadcast row. −inf where the
    complement is empty or holds no mass.
    """
    weights, mass = rows.weights()
    count = max(weights.shape[0], ids.shape[0])
    rest = np.array(np.broadcast_to(weights, (count, weights.shape[1])), dtype=np.float64)
    np.put_along_axis(rest, ids, 0.0, axis=1)
    with np.errstate(divide="ignore"):
        tail = np.log(np.sum(rest, axis=1)) - np.log(np.broadcast_to(mass, (count,)))
    # The weights are e^(z − max): a rest far below the top (beyond e^−700) underflows there. Its log-sum-exp,
    # shifted by the rest's own maximum, is still exact (rows used as stored count only their weighted entries).
    redo = np.flatnonzero(~(tail > -700.0))
    if redo.size and rows.normalised:
        shifted = np.broadcast_to(rows.shifted, (count, rows.shifted.shape[1]))[redo].astype(np.float64)
        np.put_along_axis(shifted, ids[redo] if ids.shape[0] == count else np.broadcast_to(ids, (redo.size,
                          ids.shape[1])), -np.inf, axis=1)
        tail[redo] = logsumexp(shifted) - np.broadcast_to(rows.offset, (count,))[redo]
    return tail


@dataclass
class Written:
    """One block of reference rows as the ``reference`` command writes them."""

    ids: np.ndarray  # (rows, K) int64
    logprobs: np.ndarray  # (rows, K) float64
    tail: np.ndarray  # (rows,) float64, log of the mass outside the top K
    label_logprobs: np.ndarray | None = None  # (rows,) float64, NaN where the label is ignored


def reference_of(rows: LogRows, k: int, labels: np.ndarray | None = None, *, ignore_index: int = -100,
                 label: str = "labels", first_row: int = 0) -> Written:
    """The top-``k`` ids, their log-probabilities, the tail and (with ``labels``) each label's log-probability.

    Rows used as stored (llama.cpp's quantised rows) keep their convention: the tail sums only the entries
    their weights count (those above −16 nats).

    Examples
    --------
    >>> rows = as_log_rows(np.log(np.array([[0.5, 0.2, 0.2, 0.1]])), "logprobs", label="P")
    >>> block = reference_of(rows, 2, np.array([3]))
    >>> block.ids.tolist(), np.exp(block.logprobs).round(12).tolist(), round(float(np.exp(block.tail[0])), 12)
    ([[0, 1]], [[0.5, 0.2]], 0.3)
    >>> round(float(np.exp(block.label_logprobs[0])), 12)
    0.1
    """
    ids = top_k_ids(rows.shifted, k)
    top = np.take_along_axis(np.asarray(rows.shifted, dtype=np.float64), ids, axis=1) - rows.offset[:, None]
    tail = complement_log_mass(rows, ids) if ids.shape[1] < rows.shifted.shape[1] else np.full(rows.rows, -np.inf)
    label_logprobs = None
    if labels is not None:
        counted = labels != ignore_index
        vocab = rows.shifted.shape[1]
        outside = counted & ((labels < 0) | (labels >= vocab))
        if outside.any():
            at = int(np.flatnonzero(outside)[0])
            raise InputError(f"{label}: the label at position {first_row + at} is {int(labels[at])}, outside the "
                             f"vocabulary [0, {vocab}) (ignored positions use --ignore-index {ignore_index})")
        chosen = np.where(counted, labels, 0)
        label_logprobs = np.where(counted, np.asarray(rows.shifted, dtype=np.float64)[np.arange(rows.rows), chosen]
                                  - rows.offset, np.nan)
    return Written(ids, top, tail, label_logprobs)


def packed(ids: np.ndarray, logprobs: np.ndarray, tail: np.ndarray, labels: np.ndarray | None = None,
           label_logprobs: np.ndarray | None = None) -> np.ndarray:
    """Reference rows as float64 rows ``[ids, logprobs, tail(, label, label log-prob)]`` (see the module)."""
    columns = [np.asarray(ids, dtype=np.float64), np.asarray(logprobs, dtype=np.float64),
               np.asarray(tail, dtype=np.float64)[:, None]]
    if labels is not None:
        columns += [np.asarray(labels, dtype=np.float64)[:, None],
                    np.asarray(label_logprobs, dtype=np.float64)[:, None]]
    return np.concatenate(columns, axis=1)


@dataclass
class ReferenceRows(LogRows):
    """A block of reference rows: a distribution over K ids and a tail (``shifted``/``offset`` over K + 1 outcomes).

    ``ids`` are the vocabulary ids of the first K outcomes; ``vocab`` the full vocabulary's size. With labels,
    ``labels`` and ``label_logprobs`` hold each row's stored label and its exact log-probability.
    """

    ids: np.ndarray | None = None
    vocab: int = 0
    labels: np.ndarray | None = None
    label_logprobs: np.ndarray | None = None
    name: str = "reference"
    first_row: int = 0

    def label_logprob(self, chosen: np.ndarray, input_rows: np.ndarray | None = None) -> np.ndarray:
        """log p(chosen) per row: the stored label's exact value, or a top-K token's; an error otherwise.

        ``input_rows`` are the rows' numbers in the input when only some were kept (left-out positions), so that an
        error names the input's row; by default rows are numbered on from ``first_row``.
        """
        rows = np.arange(chosen.shape[0])

        def named(at: int) -> int:
            return int(input_rows[at]) if input_rows is not None else self.first_row + at

        outside = (chosen < 0) | (chosen >= self.vocab)
        if outside.any():
            at = int(np.flatnonzero(outside)[0])
            raise InputError(f"{self.name}: row {named(at)}'s label {int(chosen[at])} is outside the "
                             f"vocabulary [0, {self.vocab})")
        found = np.full(chosen.shape[0], np.nan)
        if self.labels is not None:
            stored = self.labels == chosen
            found[stored] = self.label_logprobs[stored]
        in_top = self.ids == chosen[:, None]
        hit = np.isnan(found) & in_top.any(axis=1)
        column = np.argmax(in_top, axis=1)
        found[hit] = (self.shifted[rows, column] - self.offset)[hit]
        missing = np.isnan(found)
        if missing.any():
            at = int(np.flatnonzero(missing)[0])
            raise InputError(f"{self.name}: row {named(at)}'s label {int(chosen[at])} is neither the "
                             "label stored with the reference nor among its top-K tokens, so its log-probability is "
                             "unknown; write the reference with these --labels (klcli reference … --labels IDS)")
        return found


def reference_rows(block: np.ndarray, *, top_k: int, vocab: int, has_labels: bool, label: str, first_row: int = 0,
                   as_stored_below: float | None = None, stored: str = "float32") -> ReferenceRows:
    """Packed reference rows (see the module) as :class:`ReferenceRows` over their K + 1 outcomes."""
    values = np.asarray(block, dtype=np.float64)
    ids = values[:, :top_k].astype(np.int64)
    logprobs = values[:, top_k : 2 * top_k + 1]
    padding = np.flatnonzero(np.isnan(logprobs[:, 0]))
    if padding.size:
        raise InputError(f"{label}: row {first_row + int(padding[0])} is a padding position (its label was ignored "
                         "when the reference was written, and its distribution not read); compare and perplexity, "
                         "which read the stored labels, leave it out")
    rows = as_log_rows(logprobs, "logprobs", label=label, first_row=first_row, stored=stored,
                       as_stored_below=as_stored_below)
    labels = label_logprobs = None
    if has_labels:
        labels = values[:, 2 * top_k + 1].astype(np.int64)
        label_logprobs = values[:, 2 * top_k + 2]
    return ReferenceRows(rows.shifted, rows.offset, rows.raw, rows._weights, rows._mass, rows.normalised,
                         ids=ids, vocab=vocab, labels=labels, label_logprobs=label_logprobs, name=label,
                         first_row=first_row)


def partition_of(rows: LogRows, ids: np.ndarray) -> LogRows:
    """A full distribution mapped onto a reference's partition: its log-probabilities at ``ids`` and its tail.

    The normaliser stays apart (``offset``), so log p_ref − log q keeps the precision of the full rows.
    """
    if rows.fast:
        rows = rows.precise()
    count = max(rows.rows, ids.shape[0])
    shifted = np.broadcast_to(np.asarray(rows.shifted, dtype=np.float64), (count, rows.shifted.shape[1]))
    top = np.take_along_axis(shifted, ids, axis=1)
    offset = np.broadcast_to(rows.offset, (count,))
    if ids.shape[1] < shifted.shape[1]:
        tail = complement_log_mass(rows, ids) + offset
    else:
        tail = np.full(count, -np.inf)
    return LogRows(np.concatenate([top, tail[:, None]], axis=1), np.array(offset))


def aligned(p: LogRows, q: LogRows) -> tuple[LogRows, LogRows]:
    """Both sides over the same outcomes: a reference side maps the other onto its partition.

    Both come back as plain :class:`LogRows` over the K + 1 outcomes, so that kernels calling one another
    map a side only once.
    """
    if isinstance(p, ReferenceRows) and isinstance(q, ReferenceRows):
        raise InputError(f"{q.name}: two top-K references cannot be compared with each other (their tokens "
                         "differ); give one side's full logits")
    if isinstance(p, ReferenceRows):
        return _plain(p), partition_of(q, p.ids)
    if isinstance(q, ReferenceRows):
        return partition_of(p, q.ids), _plain(q)
    return p, q


def _plain(rows: ReferenceRows) -> LogRows:
    return LogRows(rows.shifted, rows.offset, rows.raw, rows._weights, rows._mass, rows.normalised)


def check_rows(block: np.ndarray, *, top_k: int, vocab: int, name: str, first_row: int, stored: str,
               as_stored: bool, ignore_index: int | None = None) -> None:
    """Refuse damaged reference rows: ids out of range or repeated, log-probabilities out of order, NaN or
    above 0, or a total (top K and tail) that is not 1 within the tolerance of ``stored`` values.

    With labels, a padding row (its label ``ignore_index``, its log-probabilities all NaN: a position the
    writer did not read) passes; commands that read the stored labels never read it.
    """
    if ignore_index is not None:
        padding = (block[:, 2 * top_k + 1] == ignore_index) & np.all(np.isnan(block[:, top_k : 2 * top_k + 1]),
                                                                       axis=1)
        if padding.any():  # checked as a valid row instead: uniform over the K ids and the tail
            block = block.copy()
            block[padding, :top_k] = np.arange(top_k)
            block[padding, top_k : 2 * top_k + 1] = -math.log(top_k + 1)
    ids, logprobs = block[:, :top_k], block[:, top_k : 2 * top_k + 1]
    bad = np.flatnonzero(~np.all((ids >= 0) & (ids < vocab) & (ids == np.round(ids)), axis=1))
    if bad.size:
        row = int(bad[0])
        value = float(ids[row][~((ids[row] >= 0) & (ids[row] < vocab) & (ids[row] == np.round(ids[row])))][0])
        shown = int(value) if value == round(value) else value
        raise InputError(f"{name}: row {first_row + row} stores token id {shown!r}, outside the vocabulary "
                         f"[0, {vocab}); the file is damaged: write it again with klcli reference")
    if top_k > 1:
        ordered = np.sort(ids, axis=1)
        repeated = np.flatnonzero(np.any(ordered[:, 1:] == ordered[:, :-1], axis=1))
        if repeated.size:
            row = int(repeated[0])
            raise InputError(f"{name}: row {first_row + row} stores a token id twice; the K ids of a row must be "
                             "distinct: write it again with klcli reference")
    with np.errstate(invalid="ignore"):
        invalid = np.isnan(logprobs) | (logprobs == np.inf)
        unordered = logprobs[:, 1:top_k] > logprobs[:, : top_k - 1]
    bad = np.flatnonzero(invalid.any(axis=1) | unordered.any(axis=1))
    if bad.size:
        row = int(bad[0])
        raise InputError(f"{name}: row {first_row + row}'s log-probabilities are NaN, +inf or not in decreasing "
                         "order (the top K are stored most probable first); write it again with klcli reference")
    with np.errstate(divide="ignore", over="ignore"):
        peak = np.max(logprobs, axis=1, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0)
        total = np.exp(peak[:, 0]) * np.sum(np.exp(logprobs - peak), axis=1)
    if as_stored:  # llama.cpp's 16-bit rows: used as stored, they reach 1 only to their quantisation
        off = np.flatnonzero(~(total <= 1.0 + STORED_SLACK))
    else:
        off = unit_sum_misses(total, logprobs, "logprobs", stored)
    if off.size:
        row = int(off[0])
        raise InputError(f"{name}: row {first_row + row}'s probabilities (top {top_k} and tail) sum to "
                         f"{float(total[row])!r}, not 1 (tolerance {tolerance_of(logprobs[row], stored, as_stored):.2g}"
                         f" for {top_k + 1} {stored} log-probabilities); the file is damaged: write it again with "
                         "klcli reference")


# How far above 1 the rows of a reference written from a llama.cpp base file may sum: that file's codes are
# exact to half a 16-bit step (about 1.2e-4 nats each), so the decoded probabilities sum to 1 within about that.
STORED_SLACK = 1e-3


def tolerance_of(row: np.ndarray, stored: str, as_stored: bool) -> float:
    from klcli.core.logspace import row_tolerance

    return STORED_SLACK if as_stored else row_tolerance(row, "logprobs", stored)[0]
