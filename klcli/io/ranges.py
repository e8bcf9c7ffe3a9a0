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

    return _piece_of(source, blocks)


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

    return _piece_of(source, blocks)


def _piece_of(source: Source, blocks) -> Source:
    """``source`` reading ``blocks`` only: its whole-file shortcuts (the memory map, seeking to a row or a position)
    are dropped, so a range of the piece is taken within the piece, not within the file."""
    return replace(source, read_blocks=blocks, array=None, read_rows=None, read_positions=None)


def shard_ends(source: Source, unit: str = "rows") -> tuple[int, ...]:
    """Where a sharded operand's shards end, counted in ``unit`` (``rows`` of the rows × outcomes view, or
    ``values``): the cut points that keep every piece within whole shards. Empty for one file, 1-D shards counted
    in rows (one vector) and shards whose lengths are not yet known."""
    if not source.shards or (unit == "rows" and len(source.shape) == 1):
        return ()
    ends, at = [], 0
    for shard in source.shards:
        size = shard.count(unit)
        if size is None:
            return ()
        at += size
        ends.append(at)
    return tuple(ends)


def driving_cuts(total: int, *sources: tuple[Source | None, str]) -> tuple[int, ...]:
    """The shard ends of the first sharded (source, unit) that holds all ``total`` rows — the operand whose shards
    name the rows (klcli.rownames) — or () if none is sharded."""
    for source, unit in sources:
        ends = () if source is None else shard_ends(source, unit)
        if ends and ends[-1] == total:
            return ends
    return ()


def piece_ranges(total: int, pieces: int, align: int = 1, cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """``total`` rows cut into at most ``pieces`` consecutive ranges of near-equal size, cut at multiples of ``align``.

    Like ``split -n l/N``: the sizes differ by at most one ``align`` unit; no range is empty. With ``cuts`` (a
    sharded operand's shard ends), pieces keep to whole shards: as many pieces as shards is one piece a shard;
    fewer group consecutive shards, each boundary the shard end nearest an equal share; more cut the shards
    themselves (the largest into the most pieces), a piece never crossing a shard's end. Cuts that are not
    multiples of ``align`` (inside a sequence) are not used.

    Examples
    --------
    >>> piece_ranges(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    >>> piece_ranges(12, 2, align=4)
    [(0, 4), (4, 12)]
    >>> piece_ranges(2, 5)
    [(0, 1), (1, 2)]
    >>> piece_ranges(10, 3, cuts=[2, 3, 10])  # one piece a shard
    [(0, 2), (2, 3), (3, 10)]
    >>> piece_ranges(10, 2, cuts=[2, 3, 8, 10])  # whole shards, near-equal
    [(0, 3), (3, 10)]
    >>> piece_ranges(10, 3, cuts=[2, 10])  # the larger shard is cut
    [(0, 2), (2, 6), (6, 10)]
    """
    align = max(1, align)
    ends = sorted({int(cut) for cut in cuts if 0 < cut < total and cut % align == 0})
    if not ends:
        return _even_ranges(total, pieces, align)
    ends.append(total)
    starts = [0, *ends[:-1]]
    if pieces >= len(ends):
        counts = _apportioned([(b - a) for a, b in zip(starts, ends)], pieces, align)
        return [(a + c, a + d) for a, b, count in zip(starts, ends, counts)
                for c, d in _even_ranges(b - a, count, align)]
    bounds, at = [0], -1
    for k in range(1, pieces):  # the k-th boundary: the shard end nearest k/pieces of the rows, leaving one a piece
        allowed = range(at + 1, len(ends) - pieces + k)
        at = min(allowed, key=lambda i: (abs(ends[i] * pieces - total * k), i))
        bounds.append(ends[at])
    bounds.append(total)
    return list(zip(bounds, bounds[1:]))


def _apportioned(sizes: list[int], pieces: int, align: int) -> list[int]:
    """Pieces per shard, ``pieces`` in all (at least one each): each further piece to the shard with the most rows
    per piece (the first on a tie), never more pieces than a shard has ``align`` units."""
    counts = [1] * len(sizes)
    for _ in range(pieces - len(sizes)):
        open_ = [i for i, size in enumerate(sizes) if counts[i] < -(-size // align)]
        if not open_:
            break
        chosen = max(open_, key=lambda i: (sizes[i] / counts[i], -i))
        counts[chosen] += 1
    return counts


def _even_ranges(total: int, pieces: int, align: int) -> list[tuple[int, int]]:
    units = -(-total // align)
    pieces = max(1, min(pieces, units))
    bounds = [min(total, (units * k // pieces) * align) for k in range(pieces + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
