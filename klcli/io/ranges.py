"""A piece of an operand: rows [start, stop) of it, read without reading the rest where the format allows.

Two views, as the commands count their inputs:

* :func:`row_range` — rows of the operand seen as rows × outcomes (leading
  axes flattened: the positions of (B, T, V) logits);
* :func:`position_range` — values of the operand flattened (one label or mask
  value per position, whatever its stored shape).

A memory-mapped array (``.npy``, safetensors) is sliced; a format that can seek
to a row gives ``Source.read_rows`` (Parquet: only the row groups that overlap
are decoded; a sharded operand: only the shards that overlap, the first and
last trimmed, and ``Source.read_positions`` likewise); any other is read from
the start with the rows before the piece skipped. The piece keeps the operand's description (its shape is the file's):
reports name the input, and the piece's place is the row range beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from klcli.io.source import Source


def row_count(source: Source) -> int | None:
    """Rows of the rows × outcomes view (a 1-D array is one row); None while a text table's length is unknown."""
    if None in source.shape:
        return None
    if len(source.shape) == 1:
        return 1
    count = 1
    for size in source.shape[:-1]:
        count *= size
    return count


def position_count(source: Source) -> int | None:
    """Values in the operand (one per position); None while unknown."""
    if None in source.shape:
        return None
    count = 1
    for size in source.shape:
        count *= size
    return count


def window(blocks: Iterable[np.ndarray], skip: int, count: int) -> Iterator[np.ndarray]:
    """Rows ``skip`` to ``skip + count`` of a stream of row blocks; the stream is left once they are out."""
    if count <= 0:
        return
    for block in blocks:
        rows = block.shape[0]
        if skip >= rows:
            skip -= rows
            continue
        block, skip = block[skip:], 0
        if block.shape[0] >= count:
            yield block[:count]
            return
        count -= block.shape[0]
        yield block


def _c_ordered_rows(source: Source) -> np.ndarray | None:
    """The operand's memory map as rows × outcomes, if it is one (C order: the rows are contiguous)."""
    if source.array is None or len(source.shape) < 2:
        return None
    mapped = source.array()
    if not mapped.flags.c_contiguous:
        return None
    return mapped.reshape(-1, mapped.shape[-1])


def row_range(source: Source, start: int, stop: int) -> Source:
    """``source`` restricted to rows [start, stop) of its rows × outcomes view."""

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        rows = _c_ordered_rows(source)
        if rows is not None:
            for at in range(start, stop, block_rows):
                yield rows[at : min(at + block_rows, stop)]
            return
        if source.read_rows is not None:
            yield from source.read_rows(start, stop, block_rows)
            return
        yield from window(source.blocks(block_rows), start, stop - start)

    return replace(source, read_blocks=blocks)


def position_range(source: Source, start: int, stop: int) -> Source:
    """``source`` restricted to values [start, stop) of its flattened values, as one row per block."""

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        size = max(1, block_rows)
        if source.read_positions is not None:
            yield from source.read_positions(start, stop, size)
            return
        if source.array is not None and source.array().flags.c_contiguous:
            flat = source.array().reshape(-1)
            for at in range(start, stop, size):
                yield flat[at : min(at + size, stop)].reshape(1, -1)
            return
        flat_blocks = (np.asarray(block).reshape(-1, 1) for block in source.blocks(block_rows))
        for block in window(flat_blocks, start, stop - start):
            yield block.reshape(1, -1)

    return replace(source, read_blocks=blocks)


def piece_ranges(total: int, pieces: int, align: int = 1) -> list[tuple[int, int]]:
    """``total`` rows cut into at most ``pieces`` consecutive ranges of near-equal size, cut at multiples of ``align``.

    Like ``split -n l/N``: the sizes differ by at most one ``align`` unit; no range is empty.

    Examples
    --------
    >>> piece_ranges(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    >>> piece_ranges(12, 2, align=4)
    [(0, 4), (4, 12)]
    >>> piece_ranges(2, 5)
    [(0, 1), (1, 2)]
    """
    align = max(1, align)
    units = -(-total // align)
    pieces = max(1, min(pieces, units))
    bounds = [min(total, (units * k // pieces) * align) for k in range(pieces + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
