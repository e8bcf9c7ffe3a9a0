"""Partial files (``--partial FILE``, read by ``klcli merge``): one piece's exact partial, never a pickle.

Layout (all integers little-endian), in the spirit of safetensors::

    8 bytes   magic b"KLCLIPRT"
    8 bytes   length H of the header
    H bytes   the header: UTF-8 JSON (command, operands, options, rows, inputs, klcli version, array table)
    …         the arrays' raw bytes, little-endian, at the offsets the header gives (from the end of the header)
    32 bytes  SHA-256 of every byte before it

The per-row and per-token arrays stay binary (≈ V times smaller than the logits
they summarise); the header records what ``klcli merge`` checks before merging:
the command, the options that shape the figures, the inputs and the row range.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from klcli.engine import Partial
from klcli.errors import InputError
from klcli.pieces import Piece

MAGIC = b"KLCLIPRT"
VERSION = 1
_DIGEST = 32
# The element types a partial holds: no object, string or structured data (nothing is ever unpickled).
_DTYPES = {"<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1"}
_GROUPS = ("per_row", "values")


def _plain(value):
    if isinstance(value, np.ndarray):  # an array given from Python: recorded by what it is, as operands are
        return "<array>"
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def encode(command: str, operands: list, options: dict, piece: Piece, total: int | None = None) -> bytes:
    """The partial file's bytes for ``piece`` of ``klcli COMMAND OPERANDS OPTIONS`` (``total``: the run's rows)."""
    from klcli import __version__

    partial = piece.partial
    table, chunks, offset = [], [], 0
    for group in _GROUPS:
        for name, values in getattr(partial, group).items():
            array = np.ascontiguousarray(values)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            dtype = array.dtype.str
            table.append({"group": group, "name": name, "dtype": dtype, "shape": list(array.shape),
                          "offset": offset, "nbytes": array.nbytes})
            chunks.append(array.tobytes())
            offset += array.nbytes
    header = {
        "format": "klcli-partial", "version": VERSION, "klcli": __version__, "command": command,
        "operands": [operand if isinstance(operand, str) or operand is None else "<array>" for operand in operands],
        "options": options, "rows": [partial.start, partial.stop],
        "total": partial.stop if total is None else total, "inputs": piece.meta.get("inputs", []),
        "meta": piece.meta, "counts": partial.counts, "arrays": table,
    }
    text = json.dumps(header, default=_plain, allow_nan=True).encode("utf-8")
    body = MAGIC + struct.pack("<Q", len(text)) + text + b"".join(chunks)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, name: str) -> tuple[dict, Piece]:
    """The header and the piece of a partial file's bytes; anything damaged is an InputError naming ``name``."""
    from klcli.io.source import parse_json

    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise InputError(f"{name}: not a klcli partial file (written by klcli COMMAND … --partial FILE)")
    if len(data) < len(MAGIC) + 8 + _DIGEST or hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise InputError(f"{name}: is truncated or damaged: its checksum does not match (was it cut short, or "
                         "changed after it was written?)")
    (length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    end = len(data) - _DIGEST
    if start + length > end:
        raise InputError(f"{name}: is damaged: its header claims {length} bytes, more than the file holds")
    try:
        header = parse_json(data[start : start + length].decode("utf-8"), name)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{name}: is damaged: its header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != "klcli-partial":
        raise InputError(f"{name}: not a klcli partial file (its header names no klcli-partial format)")
    if header.get("version") != VERSION:
        raise InputError(f"{name}: is a partial file of format version {header.get('version')!r}; this klcli reads "
                         f"version {VERSION} (merge with the klcli that wrote it)")
    try:
        return header, _piece(header, data, start + length, end, name)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name}: is damaged: its header does not describe a partial ({type(exc).__name__}: "
                         f"{exc})") from None


def _piece(header: dict, data: bytes, base: int, end: int, name: str) -> Piece:
    first, last = (int(row) for row in header["rows"])
    groups: dict[str, dict[str, np.ndarray]] = {"per_row": {}, "values": {}}
    for entry in header["arrays"]:
        dtype, shape = entry["dtype"], tuple(int(size) for size in entry["shape"])
        if entry["group"] not in groups or dtype not in _DTYPES or any(size < 0 for size in shape):
            raise InputError(f"{name}: is damaged: array {entry.get('name')!r} has an unknown group or type")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        if nbytes != count * np.dtype(dtype).itemsize or offset < 0 or base + offset + nbytes > end:
            raise InputError(f"{name}: is damaged: array {entry['name']!r} lies outside the file")
        values = np.frombuffer(data, dtype=dtype, count=count, offset=base + offset).reshape(shape)
        groups[entry["group"]][str(entry["name"])] = values.astype(values.dtype.newbyteorder("="), copy=True)
    counts = {str(key): int(value) for key, value in header["counts"].items()}
    partial = Partial(first, last, groups["per_row"], groups["values"], counts)
    return Piece(partial, dict(header["meta"]))


def write_partial(path: str, data: bytes) -> None:
    """Write a partial file as ``-o`` writes a report: atomically, never over an input."""
    from klcli.io.output import write_result

    write_result(path, data)


def read_partial(path: str) -> tuple[dict, Piece]:
    """A partial file's header and piece."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return decode(data, path)
