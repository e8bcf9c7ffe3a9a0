"""Which positions of a padded batch are scored, and which input row each kept one is.

A position is left out when its label is the ignore index (PyTorch's −100), or
when a mask marks it 0. Statistics are computed over the kept rows only, but
every reported row (``argmax``, ``worst``, error messages) is the row of the
input, 0-based over all rows read (SPEC §4): :func:`kept_rows` gives that
identity, :func:`kept_log_rows` converts only the kept rows while naming a bad
row by its input row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from klcli.errors import InputError


def as_position_mask(values: np.ndarray, *, label: str, first_position: int) -> np.ndarray:
    """A mask of positions as booleans: each value must be 0 or 1 (or a boolean).

    Examples
    --------
    >>> as_position_mask(np.array([1.0, 0.0, 1.0]), label="mask", first_position=0).tolist()
    [True, False, True]
    """
    flat = np.asarray(values).reshape(-1)
    if flat.dtype == np.bool_:
        return flat
    with np.errstate(invalid="ignore"):
        bad = (flat != 0) & (flat != 1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InputError(f"{label}: position {first_position + index} holds {flat[index].item()!r}; a mask holds "
                         "1 (score the position) or 0 (leave it out), or booleans")
    return flat == 1


def masked_labels(ids: np.ndarray, mask: np.ndarray, ignore_index: int) -> np.ndarray:
    """Labels with every position the mask leaves out set to ``ignore_index``.

    Examples
    --------
    >>> masked_labels(np.array([5, 6, 7]), np.array([True, False, True]), -100).tolist()
    [5, -100, 7]
    """
    return np.where(mask, ids, ignore_index)


def kept_rows(keep: np.ndarray | None, first_row: int, count: int) -> np.ndarray:
    """The input row of each kept row of a block of ``count`` rows starting at ``first_row``.

    Examples
    --------
    >>> kept_rows(np.array([True, False, True]), 10, 3).tolist()
    [10, 12]
    >>> kept_rows(None, 10, 2).tolist()
    [10, 11]
    """
    if keep is None:
        return first_row + np.arange(count, dtype=np.int64)
    return first_row + np.flatnonzero(keep).astype(np.int64)


def runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive kept rows.

    Examples
    --------
    >>> runs(np.array([True, True, False, True]))
    [(0, 2), (3, 4)]
    """
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def kept_log_rows(convert: Callable[[np.ndarray, int], object], block: np.ndarray, keep: np.ndarray | None,
                  first_row: int):
    """``convert(rows, first_row)`` on the kept rows of ``block`` only (left-out rows may hold anything).

    ``convert`` validates rows and names a bad one as ``first_row + i``. The
    kept rows are converted at once; only if that fails are they converted run
    by run, so that the error names the bad row's input row.
    """
    if keep is None:
        return convert(block, first_row)
    try:
        return convert(block[keep], first_row)
    except InputError:
        for start, stop in runs(keep):
            convert(block[start:stop], first_row + start)
        raise
