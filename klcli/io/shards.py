"""Sharded operands (SPEC §3): a quoted glob or a directory read as one input, its files' rows concatenated.

A real evaluation is dumped in shards (``logits/part-0.npy`` … ``part-63.npy``,
a Parquet dataset directory). :func:`open_shards` turns such an operand into
one :class:`~klcli.io.source.Source` whose blocks are the shards' blocks, shard
after shard, in natural sort order (``part-2`` before ``part-10``). Each shard
is opened once up front (its header: shape, dtype, and every check its reader
makes, so a bad shard is an error naming it before any work) and again, one at a
time, while it is streamed: memory is bounded as for one file, whatever the
number of shards.

``Source.shards`` records the shards (:class:`Shard`: the path as the glob gave
it, the operand that opens it alone, its stored shape), so a global row can be
named by its shard (:func:`locate`) and a shard can be sent elsewhere to be
computed on its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from klcli.errors import InputError, ShapeError
from klcli.io.source import Source

# Files a directory of shards holds beside its data, never read: Spark's and Hadoop's _SUCCESS markers, Parquet's
# _metadata/_common_metadata sidecars (every name starting "_"), and hidden files (".part-0.crc", ".DS_Store").
_SIDECAR_PREFIXES = ("_", ".")


@dataclass
class Shard:
    """One file of a sharded operand.

    ``path`` is the file as the glob (or the directory listing) gave it;
    ``operand`` opens it alone (``path`` or ``path:SELECTOR``); ``shape`` is its
    stored shape, whose leading entry is ``None`` for a text table until the
    shard has been read, when ``read`` holds the (rows, values) it yielded.
    """

    path: str
    operand: str
    shape: tuple[int | None, ...]
    read: tuple[int, int] | None = None  # (rows, values) seen while streaming a text table

    def count(self, unit: str) -> int | None:
        """How many of ``unit`` the shard holds: ``rows`` (leading axes flattened; a 1-D shard is one row),
        ``values`` (every entry: positions of labels or per-token values) or ``sequences`` (its first axis)."""
        if None in self.shape:
            if self.read is None:
                return None
            rows, values = self.read
            return values if unit == "values" else rows if len(self.shape) > 1 else 1
        sizes = [int(size) for size in self.shape if size is not None]
        if unit == "values":
            return math.prod(sizes)
        if len(sizes) == 1:
            return 1
        return sizes[0] if unit == "sequences" else math.prod(sizes[:-1])


# --- naming and listing ---------------------------------------------------------------------------------------


def natural_key(path: str) -> tuple:
    """Sort key putting ``part-2`` before ``part-10``: runs of digits compare as numbers.

    Examples
    --------
    >>> sorted(["part-10.npy", "part-2.npy", "part-1.npy"], key=natural_key)
    ['part-1.npy', 'part-2.npy', 'part-10.npy']
    """
    pieces = re.split(r"(\d+)", path)
    return tuple(int(piece) if index % 2 else piece for index, piece in enumerate(pieces)), path


def is_sharded(operand) -> bool:
    """Whether an operand string names shards: an existing directory (``DIR`` or ``DIR:SELECTOR``), or a glob
    pattern (``*``, ``?`` or ``[``) that is not itself an existing file."""
    return isinstance(operand, str) and _resolve(operand) is not None


def _resolve(operand: str) -> tuple[str, str | None, bool] | None:
    """(pattern or directory, selector, is_directory) for a sharded operand; None for any other operand."""
    if not operand or operand == "-" or os.path.isfile(operand):
        return None
    if os.path.isdir(operand):
        return operand, None, True
    colons = [index for index, char in enumerate(operand) if char == ":" and index]
    for index in colons:  # FILE:SELECTOR with an existing file is a single file (operand.py), DIR:SELECTOR shards
        head = operand[:index]
        if os.path.isfile(head):
            return None
        if os.path.isdir(head):
            return head, operand[index + 1 :], True
    if not glob.has_magic(operand):
        return None
    if _matches(operand) or not colons:
        return operand, None, False
    for index in colons:  # 'shards/*.safetensors:logits': the selector follows the first prefix that matches files
        if _matches(operand[:index]):
            return operand[:index], operand[index + 1 :], False
    return operand, None, False


def _matches(pattern: str) -> list[str]:
    """The regular files a glob matches: ``**`` spans folders; hidden files and ``_SUCCESS``/``_metadata``
    sidecars only if the pattern's own name starts with ``.`` or ``_`` (hidden ones, as the shell does)."""
    sidecars = not os.path.basename(pattern).startswith("_")
    return [path for path in glob.glob(pattern, recursive=True)
            if os.path.isfile(path) and not (sidecars and os.path.basename(path).startswith("_"))]


def shard_paths(operand: str) -> list[str] | None:
    """The files a sharded operand reads, in order (None if the operand is not sharded); nothing is opened."""
    resolved = _resolve(operand)
    if resolved is None:
        return None
    where, _selector, is_directory = resolved
    return _listing(where, is_directory)


def _listing(where: str, is_directory: bool) -> list[str]:
    if not is_directory:
        paths = _matches(where)
        if not paths:
            raise InputError(f"{where}: the pattern matches no file (quote it so the shell does not expand it, and "
                             "check the folder and the name)")
        return sorted(paths, key=natural_key)
    try:
        names = os.listdir(where)
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({exc.strerror})") from None
    names = [name for name in names if not name.startswith(_SIDECAR_PREFIXES)]
    folders = [name for name in names if os.path.isdir(os.path.join(where, name))]
    if folders:
        raise InputError(f"{where}: holds folders ({_few(sorted(folders, key=natural_key))}); a directory operand "
                         "reads the files of one folder: name nested shards with a glob such as "
                         f"'{os.path.join(where, '*', '*')}'")
    paths = [os.path.join(where, name) for name in names]
    if not paths:
        raise InputError(f"{where}: is a directory holding no data files (hidden files and _SUCCESS/_metadata "
                         "sidecars are skipped)")
    return sorted(paths, key=natural_key)


def _few(names: list[str], at_most: int = 3) -> str:
    shown = ", ".join(os.path.basename(name) for name in names[:at_most])
    return shown + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


# --- opening ----------------------------------------------------------------------------------------------------


def open_shards(operand: str) -> Source:
    """A sharded operand as one Source; each shard is checked (format, shape, dtype) before anything is read."""
    from klcli.io.operand import file_format, open_file

    resolved = _resolve(operand)
    assert resolved is not None, operand  # (callers ask is_sharded first)
    where, selector, is_directory = resolved
    paths = _listing(where, is_directory)
    formats: dict[str, list[str]] = {}
    for path in paths:
        formats.setdefault(file_format(path) or "unknown", []).append(path)
    if len(formats) > 1:
        ranked = sorted(formats.items(), key=lambda item: -len(item[1]))  # the most files first
        listing = "; ".join(f"{fmt}: {_few(names)}" for fmt, names in ranked)
        most = ranked[0][1][0]
        example = repr(os.path.join(os.path.dirname(most), "*" + os.path.splitext(most)[1]))
        raise InputError(f"{where}: holds files of more than one format ({listing}); a sharded input is files of "
                         f"one format: name them with a glob such as {example}")

    def shard_operand(path: str) -> str:
        return path if selector is None else f"{path}:{selector}"

    shards, dtypes, first = [], [], None
    for path in paths:
        source = open_file(path, shard_operand(path), selector)
        if first is None:
            first = source
        else:
            _check_agrees(where, first, source)
        shards.append(Shard(path, shard_operand(path), tuple(source.shape)))
        dtypes.append(source.dtype)
        has_labels = source.labels is not None
        del source  # (its file closes with it: the first shard and this one are the most open at once)
    assert first is not None
    first_shape = first.shape
    shape = ((None if any(s.shape[0] is None for s in shards) else sum(int(s.shape[0] or 0) for s in shards)),
             *first_shape[1:])
    dtype = first.dtype if len(set(dtypes)) == 1 else str(np.result_type(*dtypes))  # (integer labels only)

    def reopened(shard: Shard) -> Source:
        from klcli.io import operand as opening  # (looked up as each shard is read)

        source = opening.open_file(shard.path, shard.operand, selector)
        if None not in shard.shape and tuple(source.shape) != shard.shape:
            raise InputError(f"{shard.path}: changed while it was being read (shape {shard.shape}, now "
                             f"{tuple(source.shape)})")
        return source

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        for shard in shards:
            rows = values = 0
            for block in reopened(shard).blocks(block_rows):
                rows, values = rows + block.shape[0], values + block.size
                yield block
            if None in shard.shape:
                shard.read = (rows, values)

    def labels(block_rows: int) -> Iterator[np.ndarray]:
        for shard in shards:
            source = reopened(shard)
            assert source.labels is not None
            yield from source.labels(block_rows)

    def overlapping(unit: str, start: int, stop: int, block_rows: int, cut) -> Iterator[np.ndarray]:
        """``cut(shard's Source, a, b)`` of each shard holding part of [start, stop) in ``unit``; no other shard is
        opened again (a text table's shards, whose lengths are known only once read, are read from the first)."""
        from klcli.io.ranges import window

        sizes = [shard.count(unit) for shard in shards]
        if None in sizes:
            flat = blocks(block_rows) if unit == "rows" else \
                (np.asarray(block).reshape(-1, 1) for block in blocks(block_rows))
            for block in window(flat, start, stop - start):
                yield block if unit == "rows" else block.reshape(1, -1)
            return
        before = 0
        for shard, size in zip(shards, sizes):
            if before >= stop:
                return
            a, b = max(start - before, 0), min(stop - before, int(size or 0))
            before += int(size or 0)
            if a < b:
                yield from cut(reopened(shard), a, b).blocks(block_rows)

    def read_rows(start: int, stop: int, block_rows: int) -> Iterator[np.ndarray]:
        from klcli.io.ranges import row_range

        return overlapping("rows", start, stop, block_rows, row_range)

    def read_positions(start: int, stop: int, block_rows: int) -> Iterator[np.ndarray]:
        from klcli.io.ranges import position_range

        return overlapping("values", start, stop, block_rows, position_range)

    one_vector = len(first_shape) == 1  # 1-D shards are one row: its rows are not the shards' rows
    return Source(operand, where, first.format, shape, dtype, blocks, forced_kind=first.forced_kind,
                  kernel_options=dict(first.kernel_options), labels=labels if has_labels else None,
                  shards=tuple(shards), read_rows=None if one_vector else read_rows, read_positions=read_positions)


def _is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _check_agrees(where: str, first: Source, shard: Source) -> None:
    """Every shard holds rows of the same outcomes, in the same dtype, read the same way."""
    name, other = shard.path, first.path
    if len(shard.shape) != len(first.shape) or (len(first.shape) > 1 and shard.shape[1:] != first.shape[1:]):
        if len(first.shape) > 1 and len(shard.shape) > 1 and shard.shape[-1] != first.shape[-1]:
            raise ShapeError(f"{name}: has {shard.shape[-1]} outcomes per row but {other} has {first.shape[-1]}; "
                             f"every shard of {where} must hold the same outcomes")
        raise ShapeError(f"{name}: has shape {shard.shape_text} but {other} has shape {first.shape_text}; every "
                         f"shard of {where} must have the same shape after its first axis")
    if shard.dtype != first.dtype and not (_is_integer(shard.dtype) and _is_integer(first.dtype)):
        raise ShapeError(f"{name}: holds {shard.dtype} values but {other} holds {first.dtype}; every shard of "
                         f"{where} must have the same dtype (save them alike)")
    if (shard.forced_kind, shard.kernel_options, shard.labels is None) != \
            (first.forced_kind, first.kernel_options, first.labels is None):
        raise InputError(f"{name}: is not read like {other}; every shard of {where} must be the same kind of file")


# --- naming rows ------------------------------------------------------------------------------------------------


def locate(source: Source, index: int, unit: str = "rows") -> tuple[str, int] | None:
    """The shard holding global ``index`` (counted in ``unit``, see :meth:`Shard.count`), and the index within it.

    None when the source is not sharded, a shard's size is not known, or ``index`` is past the end.
    """
    before = 0
    for shard in source.shards:
        size = shard.count(unit)
        if size is None:
            return None
        if index < before + size:
            return shard.path, index - before
        before += size
    return None


def total(source: Source, unit: str) -> int | None:
    """How many of ``unit`` the shards hold together (None if a shard's size is not yet known)."""
    sizes = [shard.count(unit) for shard in source.shards]
    return None if None in sizes else sum(size for size in sizes if size is not None)


# The sharded sources opened while a command computes (see :func:`recording`), so its rows can be named afterwards.
_OPENED: contextvars.ContextVar[list[Source] | None] = contextvars.ContextVar("klcli_shards_opened", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[Source]]:
    """Collect, in a list, every sharded Source opened inside the ``with`` block (in this thread)."""
    opened: list[Source] = []
    token = _OPENED.set(opened)
    try:
        yield opened
    finally:
        _OPENED.reset(token)


def note_opened(source: Source) -> None:
    """Record a sharded Source for :func:`recording` (a no-op outside one)."""
    opened = _OPENED.get()
    if opened is not None and source.shards:
        opened.append(source)
