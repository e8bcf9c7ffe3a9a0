"""The streaming engine: row blocks in, exact mergeable partials out.

Every command that streams goes through here, in three steps:

1. **pair** — readers yield blocks of whatever size suits their format (a
   Parquet record batch, a slice of a memory map); :func:`paired_blocks`
   re-cuts two streams to the same row boundaries, broadcasts a single-row
   side against every row of the other, and reports mismatched shapes by name;
2. **map** — :func:`run` hands each block to a kernel on a pool of threads
   (:func:`ordered_map`: order kept, a bounded number of blocks in flight) and
   reports progress; the kernel returns the block's :class:`Partial`;
3. **merge** — :func:`merge` combines partials. A partial holds exact
   sufficient statistics: per-row scalars with their global rows (from which
   counts, means, spreads, extrema with their row and exact percentiles are
   computed once, after the merge), further per-item values in row order
   (e.g. the counted tokens' losses), and integer counts. Merging is
   concatenation in row order and integer addition, so it is associative and
   any split — one block, many, uneven, on any number of threads, or (later)
   shards on other machines — gives bit-identical statistics.

The engine knows blocks and partials, not formats, kinds or units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from klcli.errors import RowCountError, ShapeError


@dataclass
class Partial:
    """The exact sufficient statistics of rows ``start`` to ``stop`` (exclusive) of a stream.

    ``per_row`` arrays hold one value per row (row ``start + i`` at index i);
    ``values`` arrays hold any number of values each, in row order (e.g. only
    the counted tokens' losses, with their sequence ids); ``counts`` are exact
    integers that add.
    """

    start: int
    stop: int
    per_row: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.stop - self.start


def merge(partials: Iterable[Partial]) -> Partial:
    """One partial for adjacent partials given in any order: arrays concatenated in row order, counts added.

    Raises ``ValueError`` if the partials overlap or leave a gap (they must
    cover consecutive rows), or if they hold different statistics (a partial
    with no ``values`` at all — a block whose rows were all left out — adds none).

    Examples
    --------
    >>> a = Partial(0, 2, {"kl": np.array([1.0, 2.0])}, counts={"tokens": 2})
    >>> b = Partial(2, 3, {"kl": np.array([3.0])}, counts={"tokens": 1})
    >>> m = merge([b, a])
    >>> (m.start, m.stop, m.per_row["kl"].tolist(), m.counts)
    (0, 3, [1.0, 2.0, 3.0], {'tokens': 3})
    """
    ordered = sorted(partials, key=lambda part: part.start)
    if not ordered:
        return Partial(0, 0)
    first = ordered[0]
    for before, after in zip(ordered, ordered[1:]):
        if after.start != before.stop:
            raise ValueError(f"partials do not cover consecutive rows: {before.start}–{before.stop} then "
                             f"{after.start}–{after.stop}")
    # A block that kept no values (every row left out) has none to add; the others must agree on what they hold.
    with_values = [part for part in ordered if part.values]
    for part in ordered[1:]:
        if part.per_row.keys() != first.per_row.keys():
            raise ValueError("partials hold different statistics; only partials of one run merge")
    for part in with_values[1:]:
        if part.values.keys() != with_values[0].values.keys():
            raise ValueError("partials hold different statistics; only partials of one run merge")
    names = with_values[0].values if with_values else {}
    return Partial(
        first.start,
        ordered[-1].stop,
        {name: _concatenate([part.per_row[name] for part in ordered]) for name in first.per_row},
        {name: _concatenate([part.values[name] for part in with_values]) for name in names},
        {name: sum(part.counts.get(name, 0) for part in ordered)
         for name in dict.fromkeys(name for part in ordered for name in part.counts)},
    )


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def run(items: Iterable[Any], kernel: Callable[[Any], Partial], *, threads: int = 0, progress=None) -> Partial:
    """Each item's partial, computed on ``threads`` threads (0: every available core), merged in order.

    ``progress.update(rows_done)`` is called after each block if a progress
    object is given.
    """
    return merge(blocks(items, kernel, threads=threads, progress=progress))


def blocks(items: Iterable[Any], kernel: Callable[[Any], Partial], *, threads: int = 0,
           progress=None) -> Iterator[Partial]:
    """The partial of each item, in order, computed on a pool of threads (see :func:`run`)."""
    done = 0
    for part in ordered_map(kernel, items, threads):  # (0: every core available, as ordered_map reads it)
        done += part.rows
        if progress is not None:
            progress.update(done)
        yield part


class Rows:
    """Hands out rows from an iterator of blocks, in the sizes asked for."""

    def __init__(self, blocks: Iterable[np.ndarray], label: str = "the input"):
        self._blocks = iter(blocks)
        self._pending: list[np.ndarray] = []
        self.taken = 0
        self._label = label
        self._width: int | None = None
        self._seen = 0

    def _next_block(self) -> np.ndarray | None:
        for block in self._blocks:
            if block.shape[0]:
                # Rows of one stream are equally wide; the files of a sharded operand of 1-D arrays are not
                # (they make one vector of token ids or values, not rows of a distribution).
                if self._width is None:
                    self._width = block.shape[1]
                elif block.ndim > 1 and block.shape[1] != self._width:
                    raise ShapeError(f"{self._label}: row {self._seen} has {block.shape[1]} outcomes but the rows "
                                     f"before it have {self._width}; every row needs the same outcomes (1-D "
                                     "shards are one vector, not rows: give 2-D shards)")
                self._seen += block.shape[0]
                return block
        return None

    def peek_single_row(self) -> tuple[bool, int | None]:
        """Whether the stream holds exactly one row; and its width (None if empty)."""
        first = self._next_block()
        if first is None:
            return False, None
        self._pending.append(first)
        if first.shape[0] > 1:
            return False, first.shape[1]
        second = self._next_block()
        if second is not None:
            self._pending.append(second)
        return second is None, first.shape[1]

    def take(self, count: int) -> np.ndarray | None:
        parts, have = [], 0
        while have < count:
            block = self._pending.pop(0) if self._pending else self._next_block()
            if block is None:
                break
            need = count - have
            if block.shape[0] > need:
                self._pending.insert(0, block[need:])
                block = block[:need]
            parts.append(block)
            have += block.shape[0]
        if not parts:
            return None
        self.taken += have
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def drain(self) -> int:
        """Count (without keeping) every row not yet taken."""
        rest = sum(b.shape[0] for b in self._pending)
        self._pending.clear()
        return self.taken + rest + sum(b.shape[0] for b in self._blocks)


def paired_blocks(
    p_blocks: Iterable[np.ndarray],
    q_blocks: Iterable[np.ndarray],
    *,
    block_rows: int | Callable[[int], int],
    p_label: str = "P",
    q_label: str = "Q",
    broadcast: bool = True,
    same_width: bool = True,
    first_row: int = 0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, p_block, q_block)`` with matching rows.

    A side that holds a single row is yielded as that one row with every
    block of the other side (callers broadcast it), unless ``broadcast`` is
    off. ``same_width`` off pairs rows of different widths (logits with their
    labels). ``block_rows`` may be a function of P's row width, to size blocks
    by bytes. ``first_row`` numbers the first row yielded (a piece of a larger
    input: rows, and so partials and messages, keep the input's numbering).

    Raises
    ------
    ShapeError
        Different widths, or different row counts with neither side single.
    """
    p_rows, q_rows = Rows(p_blocks, p_label), Rows(q_blocks, q_label)
    p_single, p_width = p_rows.peek_single_row()
    q_single, q_width = q_rows.peek_single_row()
    for width, label in ((p_width, p_label), (q_width, q_label)):
        if width is None:
            raise ShapeError(f"{label}: holds no rows")
    if same_width and p_width != q_width:
        raise ShapeError(f"{p_label} has {p_width} outcomes per row but {q_label} has {q_width}; "
                         "both must describe the same outcomes")
    size = block_rows(p_width) if callable(block_rows) else block_rows
    if p_single and q_single:
        yield first_row, p_rows.take(1), q_rows.take(1)
        return
    if broadcast and (p_single or q_single):
        single, many = (p_rows, q_rows) if p_single else (q_rows, p_rows)
        row = single.take(1)
        start = first_row
        while (block := many.take(size)) is not None:
            yield (start, row, block) if p_single else (start, block, row)
            start += block.shape[0]
        return
    start = first_row
    while True:
        p_block = p_rows.take(size)
        q_block = q_rows.take(size if p_block is None else p_block.shape[0])
        if p_block is None and q_block is None:
            return
        if p_block is None or q_block is None or p_block.shape[0] != q_block.shape[0]:
            p_total, q_total = p_rows.drain(), q_rows.drain()
            hint = ", or one of them a single row to compare against every row" if broadcast else ""
            raise RowCountError(f"{p_label} has {p_total} rows but {q_label} has {q_total}; they must have "
                                f"the same rows{hint}")
        yield start, p_block, q_block
        start += p_block.shape[0]


def aligned_blocks(
    streams: list[Iterable[np.ndarray]],
    *,
    block_rows: int | Callable[[int], int],
    labels: list[str],
    first_row: int = 0,
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield ``(first_row, [block of each stream])`` with matching rows, for any number of streams.

    The first stream sets the block size (``block_rows`` may be a function of
    its row width); widths may differ (the caller checks them). No stream is
    broadcast: all must hold the same rows. Rows are numbered from ``first_row``
    (a piece of a longer input).

    Raises
    ------
    ShapeError
        A stream holds no rows, or (RowCountError) a stream's row count differs
        from the first's; the message names that stream by its label.
    """
    rows = [Rows(stream, label) for stream, label in zip(streams, labels)]
    widths = []
    for stream, label in zip(rows, labels):
        _, width = stream.peek_single_row()
        if width is None:
            raise ShapeError(f"{label}: holds no rows")
        widths.append(width)
    size = block_rows(widths[0]) if callable(block_rows) else block_rows
    start = first_row
    while True:
        first = rows[0].take(size)
        others = [stream.take(size if first is None else first.shape[0]) for stream in rows[1:]]
        if first is None and all(block is None for block in others):
            return
        for index, block in enumerate(others, 1):
            if first is None or block is None or block.shape[0] != first.shape[0]:
                totals = [stream.drain() for stream in rows]
                raise RowCountError(f"{labels[0]} has {totals[0]} rows but {labels[index]} has {totals[index]}; "
                                    "they must have the same rows")
        yield start, [first, *others]
        start += first.shape[0]


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(function, items)`` on a pool of threads, in order, with a bounded number in flight.

    NumPy releases the GIL inside its array operations, so blocks of rows are
    computed in parallel; at most ``2·workers`` items are read ahead, so memory
    stays bounded whatever the input's length. Results come back in input
    order, so an error in an early block is reported before any later one.
    ``workers`` is capped at the cores available (:func:`worker_count`): every
    thread holds blocks in flight, so more threads than cores only add memory.
    """
    workers = worker_count(workers)
    if workers <= 1:
        yield from map(function, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="klcli") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(requested: int) -> int:
    """The threads to run for ``--threads requested``: 0 means every core; more than the cores is capped."""
    cores = available_cores()
    return cores if requested <= 0 else min(requested, cores)


def threads_note(requested: int) -> list[str]:
    """The note a capped ``--threads`` earns (none when it was honoured)."""
    cores = available_cores()
    if requested > cores:
        return [f"--threads {requested} capped at the {cores} cores available to this process"]
    return []
