"""What every reader hands on: a named stream of row blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from klcli.errors import InputError

if TYPE_CHECKING:
    from klcli.io.reference import Layout
    from klcli.io.shards import Shard

# Row blocks hold about this many values, so a block of 32 000-wide logits is
# 32 rows (1 MiB of float32, 8 MiB once widened to float64).
BLOCK_VALUES = 1 << 20


_QUOTED = 300  # characters of a library's message quoted at most (a damaged header can be kilobytes)


def first_line(exc: BaseException) -> str:
    """The first line of a library's error, to quote inside klcli's own one-line message."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= _QUOTED else line[:_QUOTED] + "…"


# JSON from files (safetensors headers, logprobs documents): integers longer than this are no size,
# offset or token count, and would meet the interpreter's own int-conversion limit (4300 digits).
_MAX_JSON_DIGITS = 40


def parse_json(text, where: str):
    """``json.loads`` for untrusted text: nesting and integer length bounded, each an error naming ``where``.

    Raises ``json.JSONDecodeError`` for text that is not JSON (callers word that
    one themselves); deep nesting (the C parser stops at the interpreter's
    recursion limit, about 1000 levels) and over-long integers are InputError.
    """
    import json

    def integer(digits: str) -> int:
        if len(digits) > _MAX_JSON_DIGITS:
            raise InputError(f"{where}: holds an integer of {len(digits.lstrip('-'))} digits; no size, offset or "
                             "count is that long (is the file damaged?)")
        return int(digits)

    try:
        return json.loads(text, parse_int=integer)
    except RecursionError:
        raise InputError(f"{where}: its JSON is nested too deeply (arrays or objects hundreds of levels deep); "
                         "is the file damaged?") from None


def read_ahead(items: Iterator, depth: int = 1) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    For decoders that release the GIL (Parquet pages): the next batch is
    decoded while the kernels work on this one, so a pair of files is read on
    two cores. An exception in the producer is raised here, in order; closing
    this generator stops the producer.
    """
    import queue
    import threading

    done = object()
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        """Queue an entry unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # noqa: BLE001 — handed to the consumer, who raises it
            offer((done, exc))

    producer = threading.Thread(target=produce, name="klcli-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                producer.join(0.01)


def max_block_bytes() -> int:
    """The most memory one decoded piece of an input may take: ``KLCLI_MAX_BLOCK_BYTES``, default 256 MiB.

    A piece is what a reader must hold at once: a row, a Fortran-ordered array
    read whole, a single table column that is one distribution. Sizes are
    checked against this before anything is decoded, so a small compressed file
    that claims gigabytes is an error, not an allocation.
    """
    return env_bytes("KLCLI_MAX_BLOCK_BYTES")


def env_bytes(name: str, default: int = 256 << 20) -> int:
    """A size limit in bytes from the environment variable ``name``, or ``default``."""
    import os

    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise InputError(f"{name} must be a number of bytes") from None


def check_piece(name: str, what: str, nbytes: int, fix: str) -> None:
    """Refuse a piece larger than :func:`max_block_bytes` before it is allocated."""
    limit = max_block_bytes()
    if nbytes > limit:
        raise InputError(f"{name}: {what} would take {nbytes / 2**20:,.0f} MiB decoded, more than the "
                         f"{limit / 2**20:,.0f} MiB one block may hold (KLCLI_MAX_BLOCK_BYTES); {fix}")


def rows_per_block(outcomes: int) -> int:
    return max(1, BLOCK_VALUES // max(1, outcomes))


@dataclass
class Source:
    """One operand, opened: how to name it, what it holds, and its rows.

    ``shape`` is the array's shape as stored; its leading entry is ``None``
    while a text table has not yet been read to the end. ``blocks(n)`` yields
    2-D arrays of at most about ``n`` rows (rows × outcomes), in order; a
    1-D array is one row.
    """

    operand: str
    path: str | None
    format: str
    shape: tuple[int | None, ...]
    dtype: str
    read_blocks: Callable[[int], Iterator[np.ndarray]] = field(repr=False)
    role: str = ""
    # The kind a format's values are (and are reported as), whatever --kind says; kernel_options says how they are read.
    forced_kind: str | None = None
    # How the kernels must treat this format's values, as keyword options of core.logspace.as_log_rows
    # (llama.cpp's base files: log-probabilities used as stored, entries at or below −16 nats left out).
    kernel_options: dict = field(default_factory=dict)
    # A format that carries the observed tokens, one per row (llama.cpp base files).
    labels: Callable[[int], Iterator[np.ndarray]] | None = field(default=None, repr=False)
    # A format whose bytes are the array (.npy, safetensors): the whole array in its stored shape, at once
    # (a read-only memory map; bfloat16 is widened to a float32 copy). None: read it block by block.
    array: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    # A sharded operand (a glob or a directory, klcli.io.shards): its files in the order their rows are read;
    # empty for one file. ``path`` is then the pattern or directory.
    shards: tuple[Shard, ...] = ()
    # A klcli top-K reference file: its layout (klcli.io.reference.Layout); its blocks are packed reference rows.
    reference: Layout | None = None
    # A format that can start reading at a row (Parquet: by row groups): (start, stop, block_rows) → the blocks of
    # rows [start, stop) only (see klcli.io.ranges). None: the rows before a piece are read and skipped.
    read_rows: Callable[[int, int, int], Iterator[np.ndarray]] | None = field(default=None, repr=False)
    # The same for values [start, stop) of the operand flattened (one per position), as one row per block: a
    # sharded operand opens only the shards that hold them. None: read from the start, the values before skipped.
    read_positions: Callable[[int, int, int], Iterator[np.ndarray]] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How messages name this input: ``P (p.csv)``, or just ``p.csv``."""
        if self.path is not None:
            where = self.path
        else:
            where = "standard input" if self.format.startswith("stdin") else self.operand
        return f"{self.role} ({where})" if self.role else where

    @property
    def shape_text(self) -> str:
        """The shape for messages, ``?`` where a text table's length is not yet known: ``(?, 5)``."""
        dims = ["?" if size is None else str(size) for size in self.shape]
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"

    @property
    def outcomes(self) -> int | None:
        return self.shape[-1] if self.shape else None

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        return self.read_blocks(rows)

    def describe(self, rows_read: int | None = None) -> dict:
        """The ``inputs`` entry of the JSON result."""
        shape = list(self.shape)
        if shape and shape[0] is None and rows_read is not None:
            shape[0] = rows_read
        entry: dict = {
            "role": self.role,
            "operand": self.operand,
            "path": self.path,
            "format": self.format,
            "shape": shape,
            "dtype": self.dtype,
        }
        if self.shards:
            entry["shards"] = len(self.shards)
        return entry
