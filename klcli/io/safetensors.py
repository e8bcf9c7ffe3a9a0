"""safetensors files, read without the safetensors package: header parsed, data read block by block.

Layout: an 8-byte little-endian header length N, N bytes of JSON naming each
tensor's ``dtype``, ``shape`` and ``data_offsets`` [begin, end) relative to the
data that follows. Every offset and size is checked against the file's real
size before anything is read. BF16 is widened exactly: its 16 bits are the
high half of a float32.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import numpy as np

from klcli.errors import InputError
from klcli.io.numpy_files import stream_blocks
from klcli.io.source import Source, parse_json

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100 << 20  # the format's own limit on the JSON header


def widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as the float32 values they denote, exactly.

    Examples
    --------
    >>> widen_bf16(np.array([0x3F80, 0xC000, 0x7F80], dtype=np.uint16)).tolist()
    [1.0, -2.0, inf]
    """
    # One pass, into one new array: the shift widens as it goes (no uint32 copy shifted into a second one).
    return np.left_shift(bits, 16, dtype=np.uint32).view(np.float32)


def _header(path: str) -> tuple[dict, int]:
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InputError(f"{path}: is too short for a safetensors file ({size} bytes)")
        length = int.from_bytes(head, "little")
        if length > min(_MAX_HEADER, size - 8):
            raise InputError(f"{path}: not a valid safetensors file: its header claims {length} bytes but the file "
                             f"holds {size - 8} after the length")
        try:
            header = parse_json(handle.read(length), path)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a valid safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a valid safetensors file: its header is not a JSON object")
    return header, 8 + length


def _tensor(path: str, header: dict, name: str, data_start: int) -> tuple[np.dtype, tuple, int, str]:
    entry = header[name]
    try:
        dtype_name, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        if not all(_is_size(value) for value in (*shape, begin, end)) or not isinstance(dtype_name, str):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: tensor {name!r} has a malformed header entry {_brief(entry)} (dtype a name, "
                         "shape and data_offsets lists of non-negative integers)") from None
    if len(shape) > 64:
        raise InputError(f"{path}: tensor {name!r} claims {len(shape)} dimensions; arrays have at most 64")
    if dtype_name not in DTYPES:
        raise InputError(f"{path}: tensor {name!r} has dtype {dtype_name}; klcli reads {', '.join(DTYPES)}")
    dtype = np.dtype(DTYPES[dtype_name])
    available = os.path.getsize(path) - data_start
    if not 0 <= begin <= end <= available or any(s < 0 for s in shape):
        raise InputError(f"{path}: tensor {name!r} claims bytes [{begin}, {end}) but the data holds {available} bytes")
    if (end - begin) != math.prod(shape) * dtype.itemsize:
        raise InputError(f"{path}: tensor {name!r} has shape {list(shape)} of {dtype_name} "
                         f"({math.prod(shape) * dtype.itemsize} bytes) but its offsets span {end - begin} bytes")
    if not shape:
        raise InputError(f"{path}: tensor {name!r} is a single number, not a distribution")
    return dtype, shape, data_start + begin, dtype_name


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _brief(entry) -> str:
    text = repr(entry)
    return text if len(text) <= 200 else text[:200] + "…"


def open_safetensors(path: str, operand: str, selector: str | None) -> Source:
    header, data_start = _header(path)
    from klcli.io.reference import is_reference_header, open_reference

    if selector is None and is_reference_header(header):  # a klcli top-K reference file: read as one
        return open_reference(path, operand, header, lambda name: _tensor(path, header, name, data_start))
    if selector is None and {"top_ids", "tail_logprob"} <= header.keys():
        raise InputError(f"{path}: holds a top-K reference's tensors but not its metadata (__metadata__ with "
                         "format 'klcli-reference'); write it again with klcli reference, or name one tensor "
                         f"as {path}:TENSOR")
    names = [key for key in header if key != "__metadata__"]
    if selector is None:
        if len(names) != 1:
            raise InputError(f"{path}: holds {len(names)} tensors ({', '.join(names) or 'none'}); name one as "
                             f"{path}:TENSOR")
        selector = names[0]
    if selector not in names:
        raise InputError(f"{path}: has no tensor {selector!r}; it holds: {', '.join(names) or 'none'}")
    dtype, shape, offset, dtype_name = _tensor(path, header, selector, data_start)

    def mapped() -> np.ndarray:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape) if math.prod(shape) else \
            np.empty(shape, dtype=dtype)

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        # Read, not memory-mapped, as C-ordered .npy files are: a file cut short while it is read is then an
        # error naming it, where a memory map dies of SIGBUS.
        with open(path, "rb", buffering=0) as handle:
            handle.seek(offset)
            for block in stream_blocks(handle, path, shape, False, dtype, block_rows):
                yield widen_bf16(block) if dtype_name == "BF16" else block

    def whole() -> np.ndarray:
        return widen_bf16(mapped()) if dtype_name == "BF16" else mapped()

    reported = "bfloat16" if dtype_name == "BF16" else str(dtype)
    return Source(operand, path, "safetensors", shape, reported, blocks, array=whole)
