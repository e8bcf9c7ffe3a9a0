"""From an operand string to an opened :class:`~klcli.io.source.Source` (SPEC §3).

An operand is, in this order: ``-`` (standard input); an existing file;
``FILE:SELECTOR`` when FILE exists and the whole string does not; a sharded
operand — a directory (``DIR`` or ``DIR:SELECTOR``) or a glob pattern, with an
optional ``:SELECTOR`` (:mod:`klcli.io.shards`); or inline numbers
(``0.1,0.2,0.7`` one row, ``0.1,0.9;0.5,0.5`` two rows).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klcli.errors import InputError
from klcli.io.source import Source, env_bytes


def _npy(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.numpy_files import open_npy

    return open_npy(path, operand)


def _npz(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.numpy_files import open_npz

    return open_npz(path, operand, selector)


def _csv(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.tables import open_csv

    return open_csv(path, operand, selector, delimiter=",")


def _tsv(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.tables import open_csv

    return open_csv(path, operand, selector, delimiter="\t")


def _parquet(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.tables import open_parquet

    return open_parquet(path, operand, selector)


def _arrow(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.tables import open_arrow

    return open_arrow(path, operand, selector)


def _safetensors(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.safetensors import open_safetensors

    return open_safetensors(path, operand, selector)


def _openai(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.openai import open_sampled_logprobs

    return open_sampled_logprobs(path, operand)


def _llama(path: str, operand: str, selector: str | None) -> Source:
    from klcli.io.llama import open_llama_base

    return open_llama_base(path, operand)


@dataclass(frozen=True)
class Reader:
    """One file format: its extensions (the first ``listed`` of them named in messages), magic bytes, opener."""

    format: str
    extensions: tuple[str, ...]
    listed: int  # how many of ``extensions`` the supported-format list names
    magic: bytes | None
    open: Callable[[str, str, str | None], Source]  # (path, operand, selector)
    selects: bool = True  # whether FILE:SELECTOR picks an array or column (False: the file holds one array)


# Every format klcli reads. The supported-format list, the extension table and the magic sniffing are derived
# from it; a file with an unknown extension is recognised by its magic bytes, and a llama.cpp base file by its
# magic whatever it is called.
READERS = (
    Reader("npy", (".npy",), 1, b"\x93NUMPY", _npy, selects=False),
    Reader("npz", (".npz",), 1, b"PK\x03\x04", _npz),
    Reader("csv", (".csv",), 1, None, _csv),
    Reader("tsv", (".tsv",), 1, None, _tsv),
    Reader("parquet", (".parquet", ".pq"), 1, b"PAR1", _parquet),
    Reader("arrow", (".feather", ".arrow", ".ipc"), 2, b"ARROW1", _arrow),
    Reader("safetensors", (".safetensors",), 1, None, _safetensors),
    Reader("openai", (".json", ".jsonl"), 2, None, _openai, selects=False),
    Reader("llama", (), 0, b"_logits_", _llama, selects=False),
)
BY_FORMAT = {reader.format: reader for reader in READERS}
FORMATS = {extension: reader.format for reader in READERS for extension in reader.extensions}
MAGIC = tuple((reader.magic, reader.format) for reader in READERS if reader.magic is not None)
SUPPORTED = " ".join(extension for reader in READERS for extension in reader.extensions[: reader.listed])

_INLINE = re.compile(r"^[\s0-9eE+\-.,;]*(?:(?:inf|nan)[\s0-9eE+\-.,;]*)*$", re.IGNORECASE)


def open_operand(operand, role: str = "", *, stdin=None) -> Source:
    """Open one operand for reading; ``role`` ("P", "Q", …) prefixes messages.

    From Python, an operand may also be an array (anything ``numpy.asarray`` takes, other than a string).
    """
    source = _open(operand, stdin)
    source.role = role
    if source.shards:
        from klcli.io.shards import note_opened

        note_opened(source)
    return source


def _open(operand, stdin) -> Source:
    if isinstance(operand, (int, float)) and not isinstance(operand, bool):
        operand = repr(operand)  # a Python number is the inline number it prints as
    if not isinstance(operand, str):
        return open_array(operand)
    if operand == "-":
        from klcli.streams import CLOSED

        if stdin is None and 0 in CLOSED:
            raise InputError("standard input is closed (0<&-); pipe CSV text or .npy bytes into '-'")
        return _open_stdin(stdin if stdin is not None else sys.stdin.buffer)
    from klcli.io.shards import is_sharded, open_shards

    if is_sharded(operand):
        return open_shards(operand)
    path, selector = split_operand(operand)
    if path is not None:
        return _open_file(path, operand, selector)
    if _INLINE.match(operand) and any(c.isdigit() or c in "iInN" for c in operand):
        return _open_inline(operand)
    missing = operand.split(":", 1)[0] if ":" in operand else operand
    _refuse_unsearchable(operand)
    raise InputError(f"{missing}: no such file (nor inline numbers such as 0.1,0.9 or 0.1,0.9;0.5,0.5)")


def split_operand(operand: str) -> tuple[str | None, str | None]:
    """The file an operand reads and its selector, as :func:`open_operand` resolves them.

    ``(None, None)`` for ``-`` and for what is not a file (inline numbers, a
    missing path). The one resolver of ``FILE:SELECTOR``, so that ``-o`` is
    checked against exactly the files the readers open.
    """
    if operand == "-" or not operand:
        return None, None
    if os.path.exists(operand):
        return operand, None
    for index, char in enumerate(operand):
        if char == ":" and index and os.path.isfile(operand[:index]):
            return operand[:index], operand[index + 1 :]
    return None, None


def _refuse_unsearchable(operand: str) -> None:
    """A path hidden by a folder without search permission is "permission denied", not "no such file"."""
    for index in [i for i, char in enumerate(operand) if char == ":"] + [len(operand)]:
        try:
            os.stat(operand[:index])
        except PermissionError:
            raise InputError(f"{operand[:index]}: cannot be read (permission denied: a folder on its path "
                             "cannot be searched)") from None
        except (OSError, ValueError):
            continue


def file_format(path: str) -> str | None:
    """The format a regular file is read as: a llama.cpp base file by its magic, others by extension, then magic."""
    return _sniff(path, only="llama") or FORMATS.get(os.path.splitext(path)[1].lower()) or _sniff(path)


def open_file(path: str, operand: str, selector: str | None) -> Source:
    """One existing file (``path``, read with ``selector``) as a Source: the shards of a sharded operand."""
    return _open_file(path, operand, selector)


def _open_file(path: str, operand: str, selector: str | None) -> Source:
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; name a file")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO, /dev/stdin on a pipe, a device: read it as a stream
        return _open_special(path, operand, selector)
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot be read (permission denied)")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: is empty")
    # llama.cpp base files are recognised by their magic whatever they are called.
    fmt = file_format(path)
    if fmt is None:
        from klcli.io.numpy_files import is_torch_checkpoint, torch_checkpoint_error

        if is_torch_checkpoint(path):
            raise torch_checkpoint_error(path)
        raise InputError(f"{path}: unknown file type {os.path.splitext(path)[1] or '(no extension)'!r}; "
                         f"klcli reads {SUPPORTED} (rename the file to its format's extension)")
    reader = BY_FORMAT[fmt]
    if selector is not None and not reader.selects:
        raise InputError(f"{path}: the file holds one array; drop the ':{selector}'")
    try:
        return reader.open(path, operand, selector)
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None


def _sniff(path: str, only: str | None = None) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    for magic, fmt in MAGIC:
        if head.startswith(magic) and only in (None, fmt):
            return fmt
    return None


def _open_special(path: str, operand: str, selector: str | None) -> Source:
    """A file that is not a regular file (a FIFO, ``/dev/stdin`` on a pipe, a character device): a stream."""
    mode = os.stat(path).st_mode
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        raise InputError(f"{path}: is a {'socket' if stat.S_ISSOCK(mode) else 'block device'}; name a file, "
                         "a pipe or '-'")
    if selector is not None:
        raise InputError(f"{path}: is a pipe or device, read as CSV text or .npy bytes; drop the ':{selector}'")
    try:
        stream = open(path, "rb")  # noqa: SIM115 — the Source reads it after this returns
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    return _open_stdin(stream, operand=operand, name=path)


def _open_stdin(stream, operand: str = "-", name: str = "standard input") -> Source:
    """Standard input (or a pipe named by a path): ``.npy`` bytes (recognised by their magic) or CSV/TSV text."""
    head = stream.peek(6)[:6] if hasattr(stream, "peek") else b""
    if head.startswith(b"\x93NUMPY"):
        from klcli.io.numpy_files import open_npy_stream

        return open_npy_stream(stream, name, operand, fmt="stdin-npy")
    data = _read_text_input(stream, name)
    if data.startswith(b"\x93NUMPY"):  # a stream that could not be peeked
        import io

        from klcli.io.numpy_files import open_npy_stream

        return open_npy_stream(io.BytesIO(data), name, operand, fmt="stdin-npy", size=len(data))
    if not data.strip():
        raise InputError(f"{name}: is empty; pipe CSV text or .npy bytes into {operand!r}")
    from klcli.io.tables import open_csv

    first_line = data.split(b"\n", 1)[0]
    delimiter = "\t" if b"\t" in first_line and b"," not in first_line else ","
    return open_csv(None if operand == "-" else name, operand, None, delimiter=delimiter, data=data)


def max_stdin_bytes() -> int:
    """The most CSV text klcli holds from standard input: ``KLCLI_MAX_STDIN_BYTES``, default 256 MiB."""
    return env_bytes("KLCLI_MAX_STDIN_BYTES")


def _read_text_input(stream, name: str = "standard input") -> bytes:
    """Standard input's (or a named pipe's) CSV text, read in bounded memory: binary data and endless input are
    errors.

    (``.npy`` bytes are streamed block by block instead; text is held so a bad row can be located.)
    """
    limit = max_stdin_bytes()
    first = stream.read(1 << 16)
    if b"\0" in first and not first.startswith(b"\x93NUMPY"):
        raise InputError(f"{name}: holds NUL bytes: it is binary data, not CSV text or .npy bytes")
    parts, size = [first], len(first)
    while chunk := stream.read(1 << 20):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise InputError(f"{name}: holds more than {limit} bytes of text (KLCLI_MAX_STDIN_BYTES); "
                             "save it to a file, which klcli reads in streaming, or raise the limit")
    return b"".join(parts)


def parse_inline(text: str) -> np.ndarray:
    """Inline numbers: ``,`` separates outcomes, ``;`` separates rows.

    Examples
    --------
    >>> parse_inline("0.1,0.2,0.7").tolist()
    [0.1, 0.2, 0.7]
    >>> parse_inline("0.1,0.9; 0.5,0.5").shape
    (2, 2)
    """
    rows = [row for row in text.strip().strip(";").split(";")]
    try:
        values = [[float(cell) for cell in row.split(",")] for row in rows]
    except ValueError:
        raise InputError(f"{text!r}: inline numbers must look like 0.1,0.9 or 0.1,0.9;0.5,0.5") from None
    widths = {len(row) for row in values}
    if len(widths) != 1:
        raise InputError(f"{text!r}: inline rows have different lengths {sorted(widths)}; every row needs the "
                         "same number of values")
    array = np.array(values, dtype=np.float64)
    return array[0] if len(values) == 1 else array


def _open_inline(operand: str) -> Source:
    array = parse_inline(operand)
    return Source(operand, None, "inline", array.shape, "float64",
                  lambda block_rows: iter([array.reshape(-1, array.shape[-1])]))


def open_array(values, name: str = "array") -> Source:
    """An in-memory array as an operand: its rows in blocks (a number is one row of one value).

    Examples
    --------
    >>> source = open_array([[0.5, 0.5], [0.9, 0.1]])
    >>> source.shape, [block.shape for block in source.blocks(1)]
    ((2, 2), [(1, 2), (1, 2)])
    """
    array = np.atleast_1d(np.asarray(values))
    if array.dtype.kind not in "fiub":
        raise InputError(f"{name}: holds {array.dtype} values; klcli reads numbers")
    rows = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)

    def blocks(block_rows: int):
        for start in range(0, rows.shape[0], block_rows):
            yield rows[start : start + block_rows]

    return Source(name, None, "array", tuple(array.shape), str(array.dtype), blocks)


def read_array(operand, role: str) -> tuple[np.ndarray, Source]:
    """An operand read whole, in its stored shape (for small parameter arrays)."""
    source = open_operand(operand, role)
    return whole_array(source), source


def whole_array(source: Source) -> np.ndarray:
    """An opened source's values gathered from its blocks, in its stored shape (a text column as a vector)."""
    if source.reference is not None:  # its blocks are packed top-K rows, no array of the file's
        raise InputError(f"{source.label}: is a klcli top-K reference file, which only kl, js, xent, compare and "
                         "perplexity read (as P or BASE); name one of its tensors as FILE:top_ids … to read it")
    blocks = [np.asarray(block) for block in source.blocks(1 << 16)]
    if len(source.shape) == 1 and len(blocks) > 1:  # 1-D shards: one vector, concatenated
        blocks = [np.concatenate([block.reshape(-1) for block in blocks]).reshape(1, -1)]
    rows = np.concatenate(blocks) if blocks else np.empty((0, source.shape[-1] or 0))
    shape = tuple(rows.shape[0] if s is None else s for s in source.shape)
    if len(shape) == 1 and source.shape[0] is None:  # a text column gathered as one vector
        shape = (rows.size,)
    return rows.reshape(shape)


def read_columns(operand, role: str) -> tuple[dict[str, np.ndarray], Source]:
    """Every column of a table operand, by name, each as a 1-D float array (small tables)."""
    source = open_operand(operand, role)
    if source.format not in ("csv", "tsv", "parquet", "arrow") or source.path is None or source.shards:
        raise InputError(f"{source.label}: expected a table file with named columns (CSV, TSV, Parquet, Arrow)")
    from klcli.io.tables import numeric_columns

    return numeric_columns(source), source
