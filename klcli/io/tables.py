"""Tables: CSV/TSV text, Parquet and Arrow IPC (Feather v2), read by record batch.

A table becomes rows × outcomes in one of two layouts: one list column holding
a vector per row, or numeric columns side by side (all of them, or those a
selector names). A single numeric column is one vector: a 1-D array, like a
one-column ``np.loadtxt``. pyarrow is imported here only, and only when a
table is opened, so one-off inline computations start fast.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klcli.errors import InputError
from klcli.io.arrow_ipc import BatchClaim, batch_claims
from klcli.io.source import Source, check_piece, first_line, max_block_bytes, read_ahead


@dataclass
class Layout:
    """Which columns of a table make the rows, and how."""

    columns: list[str]
    is_list: bool
    width: int  # outcomes per row; for one numeric column, 1
    dtype: str

    @property
    def is_vector(self) -> bool:
        """One numeric column: the whole column is a single distribution."""
        return not self.is_list and len(self.columns) == 1


def _pa():
    import pyarrow

    return pyarrow


def _read_errors() -> tuple:
    """What pyarrow raises on a damaged file: its own errors, OSError from its readers, and
    ValueError (UnicodeDecodeError) from names that are not UTF-8."""
    return (_pa().ArrowException, OSError, ValueError)


def _is_number_type(kind) -> bool:
    types = _pa().types
    return types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind)


def _is_list_type(kind) -> bool:
    types = _pa().types
    return types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind)


@functools.lru_cache(maxsize=64)
def _numpy_dtype_name(kind) -> str:
    # From an empty array, not kind.to_pandas_dtype(): before pyarrow 26 that imports pandas.
    return _pa().array([], type=kind).to_numpy(zero_copy_only=False).dtype.name


def choose_layout(schema, name: str, selector: str | None, first_list_length=None) -> Layout:
    """Decide the columns and layout of a table from its schema and an optional selector."""
    names = list(schema.names)
    if selector is not None:
        wanted = [part.strip() for part in selector.split(",") if part.strip()]
        known = set(names)
        missing = [w for w in wanted if w not in known]
        if missing or not wanted:
            raise InputError(f"{name}: has no column {', '.join(map(repr, missing)) or repr(selector)}; "
                             f"its columns are: {', '.join(names)}")
    else:
        wanted = names
    if not wanted:
        raise InputError(f"{name}: has no columns")
    kinds = [schema.field(w).type for w in wanted] if selector is not None else list(schema.types)
    distinct = set(kinds)  # (a wide table has a few types over many columns: judge each type once)
    list_kinds = {k for k in distinct if _is_list_type(k)}
    lists = [w for w, k in zip(wanted, kinds) if k in list_kinds] if list_kinds else []
    if lists:
        if len(wanted) != 1:
            raise InputError(f"{name}: column {lists[0]!r} holds lists; select it alone as {name}:{lists[0]}")
        value_type = kinds[0].value_type
        if not _is_number_type(value_type):
            raise InputError(f"{name}: list column {wanted[0]!r} holds {value_type}, not numbers")
        width = kinds[0].list_size if _pa().types.is_fixed_size_list(kinds[0]) else first_list_length(wanted[0])
        return Layout(wanted, True, width, _numpy_dtype_name(value_type))
    text_kinds = {k for k in distinct if not _is_number_type(k)}
    if text_kinds:
        column, kind = next((w, k) for w, k in zip(wanted, kinds) if k in text_kinds)
        hint = "" if selector else f"; pick the numeric columns with {name}:COL1,COL2,…"
        raise InputError(f"{name}: column {column!r} holds {kind}, not numbers{hint}")
    dtypes = {_numpy_dtype_name(k) for k in distinct}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float64"
    return Layout(wanted, False, len(wanted), dtype)


@contextlib.contextmanager
def _decoding(path: str, failure: str):
    """pyarrow's errors while decoding ``path`` as one klcli error: ``failure`` and pyarrow's first line.

    klcli's own errors (ValueErrors too) pass as they are; a batch that cannot be allocated is
    :func:`_undecodable` (pyarrow's ArrowMemoryError is an ArrowException, but not a damaged-file error).
    """
    try:
        yield
    except InputError:
        raise
    except MemoryError:
        raise _undecodable(path) from None
    except _read_errors() as exc:
        raise InputError(f"{path}: {failure} ({first_line(exc)})") from None


def _undecodable(path: str) -> InputError:
    """A batch the reader could not allocate: a real batch larger than memory, or a damaged size field."""
    return InputError(f"{path}: a record batch cannot be decoded in this machine's memory (larger than memory, or "
                      "a damaged size in the file); write the table in smaller record batches or row groups")


def _layout_of(schema, path: str, selector: str | None, first_length) -> Layout:
    """``choose_layout`` for a binary table, whose damaged schema pyarrow reports in its own ways."""
    try:
        return choose_layout(schema, path, selector, first_length)
    except InputError:  # klcli's own (a ValueError too): already names the problem
        raise
    except (KeyError, IndexError, *_read_errors()) as exc:
        raise InputError(f"{path}: has a damaged schema ({first_line(exc)})") from None


def batch_rows(batch, layout: Layout, name: str, first_row: int) -> np.ndarray:
    """A record batch as a 2-D array of rows (or a column of the 1-D vector)."""
    if batch.schema.names == layout.columns:  # (the usual case: one lookup per column is slow on wide tables)
        columns = batch.columns
    else:
        columns = [batch.column(batch.schema.get_field_index(c)) for c in layout.columns]
    for column_name, column in zip(layout.columns, columns):
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{name}: row {first_row + row} of column {column_name!r} is empty (null); "
                             "every cell needs a number")
    if layout.is_list:
        column = columns[0]
        import pyarrow.compute as arrow_compute

        lengths = arrow_compute.list_value_length(column).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != layout.width)
        if wrong.size:
            row = int(wrong[0])
            raise InputError(f"{name}: row {first_row + row} of column {layout.columns[0]!r} has "
                             f"{lengths[row]} values but earlier rows have {layout.width}; rows must be equally long")
        values = column.flatten()
        if values.null_count:
            raise InputError(f"{name}: column {layout.columns[0]!r} has an empty (null) value inside a list")
        return values.to_numpy(zero_copy_only=False).reshape(-1, layout.width)
    arrays = [c.to_numpy(zero_copy_only=False) for c in columns]
    return np.column_stack(arrays) if len(arrays) > 1 else arrays[0].reshape(-1, 1)


def _blocks_from_batches(batches: Iterator, layout: Layout, name: str, block_rows: int) -> Iterator[np.ndarray]:
    if layout.is_vector:  # one numeric column is one distribution: gather it whole
        parts = [batch_rows(b, layout, name, 0)[:, 0] for b in batches]
        yield (np.concatenate(parts) if parts else np.empty(0)).reshape(1, -1)
        return
    done = 0
    for batch in batches:
        for start in range(0, batch.num_rows, block_rows):
            piece = batch.slice(start, block_rows)
            yield batch_rows(piece, layout, name, done)
            done += piece.num_rows


# --- Parquet ---------------------------------------------------------------


def open_parquet(path: str, operand: str, selector: str | None) -> Source:
    import pyarrow.parquet as pq

    try:
        # A buffered stream (1 MiB reads) instead of whole column chunks pre-read: the decoder then holds
        # about one batch, not a row group and its read-ahead (80 MiB instead of 420 on the benchmark).
        parquet = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        schema = parquet.schema_arrow
    except _read_errors() as exc:
        raise InputError(f"{path}: not a valid Parquet file ({first_line(exc)})") from None
    _check_metadata_survives(parquet, path)

    def first_length(column: str) -> int:
        _check_first_row(parquet, path, column)
        try:
            first = next(parquet.iter_batches(batch_size=1, columns=[column]), None)
        except _read_errors() as exc:
            raise InputError(f"{path}: cannot be read ({first_line(exc)})") from None
        return 0 if first is None or first.num_rows == 0 else len(first.column(0)[0])

    layout = _layout_of(schema, path, selector, first_length)
    rows = parquet.metadata.num_rows
    _check_parquet_sizes(parquet, path, layout, rows)

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        batches = read_ahead(parquet.iter_batches(batch_size=block_rows, columns=layout.columns, use_threads=False))
        with _decoding(path, "cannot be read"):
            yield from _blocks_from_batches(batches, layout, path, block_rows)

    def rows_between(start: int, stop: int, block_rows: int) -> Iterator[np.ndarray]:
        """Rows [start, stop): only the row groups that hold them are decoded."""
        from klcli.io.ranges import window

        groups, first, at = [], None, 0
        for index in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(index).num_rows
            if at + size > start and at < stop:
                groups.append(index)
                first = at if first is None else first
            at += size
        if not groups:
            return
        batches = read_ahead(parquet.iter_batches(batch_size=block_rows, row_groups=groups, columns=layout.columns,
                                                  use_threads=False))
        with _decoding(path, "cannot be read"):
            yield from window(_blocks_from_batches(batches, layout, path, block_rows), start - first, stop - start)

    shape = (rows,) if layout.is_vector else (rows, layout.width)
    return Source(operand, path, "parquet", shape, layout.dtype, blocks,
                  read_rows=None if layout.is_vector else rows_between)


def _check_metadata_survives(parquet, path: str, seconds: float = 60.0) -> None:
    """Read every column chunk's metadata in a forked child first: some pyarrow releases abort the process
    (``std::terminate``, exit 134, no Python exception) on damaged metadata — a level histogram of the wrong
    size — and an abort cannot be caught. A child that dies of a signal makes it an error naming the file.
    Where there is no fork (Windows), the metadata is read directly."""
    import os
    import signal
    import time
    import warnings

    if not hasattr(os, "fork"):
        return
    with warnings.catch_warnings():  # (Python 3.12+ warns of forking a process with threads: the child only reads)
        warnings.simplefilter("ignore")
        child = os.fork()
    if child == 0:  # the child: its messages (pyarrow's "terminate called …") go nowhere; no atexit handlers run
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 2)
            metadata = parquet.metadata
            for group in range(metadata.num_row_groups):
                row_group = metadata.row_group(group)
                for index in range(metadata.num_columns):
                    row_group.column(index).num_values  # noqa: B018 — read for its parsing, which may abort
        except BaseException:  # noqa: BLE001 — a Python error: the parent's own reading reports it
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise InputError(f"{path}: its Parquet metadata could not be read within {seconds:.0f} s")
        time.sleep(0.001)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise InputError(f"{path}: not a valid Parquet file: its metadata is damaged (pyarrow stops the process "
                         f"reading it, {name}); rewrite the file")


def _leaf_values(parquet, column: str) -> list[tuple[int, int]]:
    """(rows, leaf values) of ``column`` in each row group, from the file's metadata (nothing decoded)."""
    metadata = parquet.metadata
    leaves = [i for i in range(metadata.num_columns)
              if metadata.schema.column(i).path.split(".")[0] == column]
    return [(metadata.row_group(g).num_rows, sum(metadata.row_group(g).column(i).num_values for i in leaves))
            for g in range(metadata.num_row_groups)]


def _check_first_row(parquet, path: str, column: str) -> None:
    """Before the first row of a list column is decoded to learn the width: bound what it can hold."""
    groups = [(rows, values) for rows, values in _leaf_values(parquet, column) if rows]
    if groups:
        rows, values = groups[0]
        check_piece(path, f"row 0 of column {column!r} (up to {values - rows + 1:,} values)",
                    (values - rows + 1) * 8, "is the file damaged, or are its rows this long?")


def _check_piece_sizes(path: str, layout: Layout, rows: int) -> None:
    """What a reader of ``layout`` must hold at once, widened to float64, checked against the block budget:
    a single column is one distribution of every row; otherwise one row."""
    if layout.is_vector:
        check_piece(path, f"column {layout.columns[0]!r}, one distribution of {rows:,} values", rows * 8,
                    "select several columns, or store the distribution as a row (a list column)")
    else:
        check_piece(path, f"a row of {layout.width:,} values", layout.width * 8, "is the file damaged?")


def _check_parquet_sizes(parquet, path: str, layout: Layout, rows: int) -> None:
    """The decoded sizes the metadata implies, checked before any page is decoded (decompression bombs:
    a constant run compresses, dictionary- and run-length-encoded, to a few bytes per billion values)."""
    width_bytes = 8  # klcli widens every value to float64
    _check_piece_sizes(path, layout, rows)
    if layout.is_list:
        for group, (group_rows, values) in enumerate(_leaf_values(parquet, layout.columns[0])):
            # (A small excess is a ragged row, reported with its row number as it is read.)
            if (values - group_rows * layout.width) * width_bytes > max_block_bytes():
                raise InputError(f"{path}: row group {group} of column {layout.columns[0]!r} holds {values:,} "
                                 f"values for {group_rows:,} rows, not {layout.width:,} per row; rows must be "
                                 "equally long")


# --- Arrow IPC (Feather v2) ------------------------------------------------


def open_arrow(path: str, operand: str, selector: str | None) -> Source:
    """An Arrow IPC file or stream, its record batches decoded one at a time.

    Batches are never all held: a compressed file (lz4 is ``write_feather``'s
    default) decodes each batch as it is read, so memory is one batch, as for an
    uncompressed memory-mapped file. A file's rows are counted from its metadata;
    a stream's by decoding each batch once more.
    """
    pa = _pa()

    def open_batches():
        """(schema, a function giving a fresh iterator of the batches)."""
        try:
            reader = pa.ipc.open_file(pa.memory_map(path, "r"))
            return reader.schema, lambda: (reader.get_batch(i) for i in range(reader.num_record_batches))
        except _read_errors():
            pass
        try:
            with pa.memory_map(path, "r") as mapped:
                schema = pa.ipc.open_stream(mapped).schema
        except _read_errors() as exc:
            raise InputError(f"{path}: not a valid Arrow IPC / Feather v2 file ({first_line(exc)})") from None

        def stream():
            with pa.memory_map(path, "r") as mapped:
                yield from pa.ipc.open_stream(mapped)

        return schema, stream

    schema, batches = open_batches()
    # Rows counted, and every batch's decoded size bounded, from the messages' metadata: nothing is decoded.
    with _decoding(path, "not a valid Arrow IPC / Feather v2 file"):
        with pa.memory_map(path, "r") as mapped:
            claims = batch_claims(mapped.read_buffer())
    _check_batch_claims(path, claims)
    rows = sum(claim.rows for claim in claims if not claim.dictionary)

    def first_length(column: str) -> int:
        with _decoding(path, "cannot be read"):
            for batch in batches():
                if batch.num_rows:
                    return len(batch.column(batch.schema.get_field_index(column))[0])
        return 0

    layout = _layout_of(schema, path, selector, first_length)
    _check_piece_sizes(path, layout, rows)

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        with _decoding(path, "cannot be read"):
            yield from _blocks_from_batches(batches(), layout, path, block_rows)

    shape = (rows,) if layout.is_vector else (rows, layout.width)
    return Source(operand, path, "arrow", shape, layout.dtype, blocks)


# A compressed batch decoding to more than this many times the bytes it occupies, and past the block budget, is
# refused before it is decoded: real logits (noisy floats) compress by a few times at most; a constant run, by
# thousands. (Within the budget any batch is decoded.)
BOMB_RATIO = 64


def _check_batch_claims(path: str, claims: list[BatchClaim]) -> None:
    limit = max_block_bytes()
    counts = {True: 0, False: 0}  # record and dictionary batches are numbered apart
    for claim in claims:
        index = counts[claim.dictionary]
        counts[claim.dictionary] += 1
        if claim.compressed and claim.decoded_bytes > limit and claim.decoded_bytes > BOMB_RATIO * claim.stored_bytes:
            what = "dictionary batch" if claim.dictionary else "record batch"
            raise InputError(
                f"{path}: {what} {index} would take {claim.decoded_bytes / 2**20:,.0f} MiB decoded from "
                f"{claim.stored_bytes / 2**10:,.0f} KiB in the file, more than the {limit / 2**20:,.0f} MiB one "
                "block may hold (KLCLI_MAX_BLOCK_BYTES); a batch is decoded whole: write the file in smaller "
                "batches (pyarrow.feather.write_feather(..., chunksize=1024)) or uncompressed")


# --- CSV / TSV -------------------------------------------------------------


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _header(opening: bytes, name: str, delimiter: str) -> tuple[list[str], bool]:
    """Column names, and whether the first line is a header (any non-numeric cell)."""
    try:
        text = opening.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        what = "CSV" if delimiter == "," else "TSV"
        raise InputError(f"{name}: is not UTF-8 text; is it really a {what} file?") from None
    # Cells as the CSV reader sees them, quotes removed: a quoted number ("0.5") is a number, not a name.
    import csv

    try:
        cells = [c.strip() for c in next(csv.reader([text], delimiter=delimiter), [""])]
    except csv.Error:  # a stray carriage return inside the line: judge the cells as they are
        cells = [c.strip() for c in text.split(delimiter)]
    if all(_is_number(c) for c in cells):
        return [str(i) for i in range(len(cells))], False
    return cells, True


def _locate_problem(data: bytes, name: str, delimiter: str, has_header: bool, width: int, selected) -> str | None:
    """Find the first ragged or non-numeric row, for a message pyarrow cannot give."""
    row = -1
    for line_number, raw in enumerate(io.BytesIO(data), start=1):
        line = raw.decode("utf-8-sig", errors="replace").rstrip("\r\n")
        if not line.strip():
            continue
        if line_number == 1 and has_header:
            continue
        row += 1
        cells = line.split(delimiter)
        if len(cells) != width:
            return (f"{name}: row {row} (line {line_number}) has {len(cells)} cells but the "
                    f"{'header' if has_header else 'first row'} has {width}; every row needs the same columns")
        for index in selected:
            cell = cells[index].strip()
            if not _is_number(cell):
                what = "is empty" if not cell else f"{cell!r} is not a number"
                return f"{name}: row {row} (line {line_number}), column {index}: {what}"
    return None


# Rows this wide are parsed line by line with NumPy: pyarrow's CSV reader costs per column (builders,
# type inference, a to_numpy per column) — 33 s and 3 GB for a 300,000-column file, against about a second.
WIDE_COLUMNS = 4096


def _check_text(opening: bytes, name: str, delimiter: str) -> None:
    """Refuse binary data and CR-only line ends up front, with the fix, instead of pyarrow's parse errors."""
    what = "CSV" if delimiter == "," else "TSV"
    if b"\0" in opening[:1 << 16]:
        raise InputError(f"{name}: holds NUL bytes: it is binary data, not {what} text")
    if b"\r" in opening.rstrip(b"\r\n"):
        raise InputError(f"{name}: its lines end with a bare carriage return (CR, old Mac style); "
                         f"convert them to newlines, e.g. tr '\\r' '\\n' < IN > OUT")


def _wide_blocks(handle, name: str, delimiter: str, has_header: bool, width: int, selected,
                 block_rows: int) -> Iterator[np.ndarray]:
    """Blocks of a wide CSV's rows, one line at a time: ``np.fromstring`` per line, linear in the columns."""
    import warnings

    separator = delimiter.encode()
    # A row of numbers needs no more than this many bytes; a longer line is damaged (or not CSV).
    longest = width * 64 + (1 << 16)
    if has_header:
        handle.readline()
    line_number = 1 if has_header else 0
    row = 0
    block: list[np.ndarray] = []
    while True:
        line = handle.readline(longest + 1)
        line_number += 1
        if not line:
            break
        if len(line) > longest:
            raise InputError(f"{name}: row {row} (line {line_number}) is longer than {longest} bytes, far more "
                             f"than {width} numbers need; is the file damaged?")
        if not line.strip():
            continue
        text = line.replace(b'"', b"").strip()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (fromstring warns, or raises, where it stops early)
                values = np.fromstring(text, dtype=np.float64, sep=delimiter) if text else np.empty(0)
        except ValueError:
            values = None
        if values is None or values.size != width or text.endswith(separator):
            raise InputError(_wide_problem(text.decode("utf-8", errors="replace"), name, delimiter, width, row,
                                           line_number, has_header))
        block.append(values if selected is None else values[selected])
        row += 1
        if len(block) >= block_rows:
            yield np.stack(block)
            block = []
    if block:
        yield np.stack(block)
    if not row:
        raise InputError(f"{name}: has a header but no rows of numbers")


def _wide_problem(line: str, name: str, delimiter: str, width: int, row: int, line_number: int,
                  has_header: bool) -> str:
    cells = line.split(delimiter)
    if len(cells) != width:
        return (f"{name}: row {row} (line {line_number}) has {len(cells)} cells but the "
                f"{'header' if has_header else 'first row'} has {width}; every row needs the same columns")
    for index, cell in enumerate(cells):
        if not _is_number(cell.strip()):
            what = "is empty" if not cell.strip() else f"{cell.strip()!r} is not a number"
            return f"{name}: row {row} (line {line_number}), column {index}: {what}"
    return f"{name}: row {row} (line {line_number}) is not {width} numbers"


def _csv_layout(names: list[str], name: str, selector: str | None) -> Layout:
    """Every CSV column is read as float64: the layout without a pyarrow schema of every column (seconds at
    300,000 columns); a selector's columns go through :func:`choose_layout`, the column list checked first."""
    if selector is None:
        return Layout(names, False, len(names), "float64")
    pa = _pa()
    wanted = [part.strip() for part in selector.split(",") if part.strip()]
    known = set(names)
    if not wanted or any(w not in known for w in wanted):
        return choose_layout(pa.schema([(n, pa.float64()) for n in names]), name, selector)  # (its message)
    return choose_layout(pa.schema([(w, pa.float64()) for w in dict.fromkeys(wanted)]), name, selector)


def open_csv(path: str | None, operand: str, selector: str | None, *, delimiter: str,
             data: bytes | None = None) -> Source:
    """A CSV or TSV file (or standard input's bytes, passed as ``data``)."""
    name = path if path is not None else "standard input"
    if data is None:
        with open(path, "rb") as handle:
            opening = handle.readline()
    else:
        opening = io.BytesIO(data).readline()
    if not opening.strip():
        raise InputError(f"{name}: is empty; expected rows of comma-separated numbers")
    names, has_header = _header(opening, name, delimiter)
    _check_text(opening, name, delimiter)
    if has_header and not opening.endswith(b"\n"):  # the header is the whole text (pyarrow: "could not skip")
        raise InputError(f"{name}: has a header but no rows of numbers (a single line, with no newline)")
    if len(set(names)) != len(names):
        raise InputError(f"{name}: the header names a column twice; column names must be unique")

    pa = _pa()
    import pyarrow.csv as pcsv

    layout = _csv_layout(names, name, selector)
    position = {column: index for index, column in enumerate(names)}  # (list.index per column was quadratic)
    selected = [position[c] for c in layout.columns]

    def batches():
        source = path if data is None else pa.BufferReader(data)
        reader = pcsv.open_csv(
            source,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0,
                                          block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            # No null spellings: "nan" and "inf" parse as numbers (and are then judged), "" is an error.
            convert_options=pcsv.ConvertOptions(column_types={n: pa.float64() for n in layout.columns},
                                                include_columns=layout.columns, null_values=[]),
        )
        yield from reader

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        produced = False
        if len(names) >= WIDE_COLUMNS and not layout.is_vector:
            handle = open(path, "rb") if data is None else io.BytesIO(data)
            with handle:
                yield from _wide_blocks(handle, name, delimiter, has_header, len(names),
                                        None if len(selected) == len(names) else selected, block_rows)
            return
        try:
            for block in _blocks_from_batches(batches(), layout, name, block_rows):
                produced = produced or block.size > 0
                yield block
        except InputError:
            raise
        except _read_errors() as exc:
            whole = data if data is not None else Path(path).read_bytes()
            message = _locate_problem(whole, name, delimiter, has_header, len(names), selected)
            raise InputError(message or f"{name}: cannot be read as {'CSV' if delimiter == ',' else 'TSV'} "
                                        f"({first_line(exc)})") from None
        if not produced:
            raise InputError(f"{name}: has a header but no rows of numbers")

    shape = (None,) if layout.is_vector else (None, layout.width)
    fmt = "stdin-csv" if data is not None else ("csv" if delimiter == "," else "tsv")
    return Source(operand, path, fmt, shape, "float64", blocks)



def group_codes(source: Source, column: str) -> np.ndarray:
    """Sequence numbers (0, 1, … by first appearance) from a table's ``column`` of any type (``--group``)."""
    if source.format not in ("csv", "tsv", "parquet", "arrow") or source.path is None or source.shards:
        raise InputError(f"--group {column}: needs a table file (CSV, TSV, Parquet, Arrow), "
                         f"not {source.label}")
    pa = _pa()
    import pyarrow.compute as arrow_compute

    try:
        if source.format in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(source.path,
                                  parse_options=pcsv.ParseOptions(delimiter="," if source.format == "csv" else "\t"),
                                  convert_options=pcsv.ConvertOptions(include_columns=[column]))
        elif source.format == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(source.path, columns=[column])
        else:
            with pa.memory_map(source.path, "r") as mapped:
                table = pa.ipc.open_file(mapped).read_all().select([column])
    except (KeyError, *_read_errors()) as exc:
        names = _column_names(source)
        raise InputError(f"{source.path}: cannot read --group column {column!r} ({first_line(exc)}); "
                         f"its columns are: {names}") from None
    values = table.column(column)
    if values.null_count:
        raise InputError(f"{source.path}: --group column {column!r} has empty cells; every row needs a group")
    encoded = arrow_compute.dictionary_encode(values).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def column_names(source: Source) -> list[str]:
    """The column names of a table file."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(source.path).schema_arrow.names)
    if source.format == "arrow":
        pa = _pa()
        with pa.memory_map(source.path, "r") as mapped:
            return list(pa.ipc.open_file(mapped).schema.names)
    with open(source.path, "rb") as handle:
        names, _ = _header(handle.readline(), source.path, "," if source.format == "csv" else "\t")
    return names


def _column_names(source: Source) -> str:
    try:
        return ", ".join(column_names(source))
    except (InputError, *_read_errors()):
        return "(unknown)"


def numeric_columns(source: Source) -> dict[str, np.ndarray]:
    """A whole table file's columns as float64 arrays (text columns are an error naming them)."""
    result = {}
    for name in column_names(source):
        column = open_table_column(source, name)
        parts = [np.asarray(block, dtype=np.float64).reshape(-1) for block in column.blocks(1 << 16)]
        result[name] = np.concatenate(parts) if parts else np.zeros(0)
    return result


def open_table_column(source: Source, name: str) -> Source:
    """One column of the same table file, as a 1-D source."""
    if source.format == "parquet":
        return open_parquet(source.path, f"{source.path}:{name}", name)
    if source.format == "arrow":
        return open_arrow(source.path, f"{source.path}:{name}", name)
    return open_csv(source.path, f"{source.path}:{name}", name, delimiter="," if source.format == "csv" else "\t")
