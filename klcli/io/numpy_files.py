"""NumPy's formats: ``.npy`` files (read block by block), ``.npz`` members and ``.npy`` bytes on a stream.

Headers are read and checked against the real size of the data before anything
is allocated, so a header that claims 10^12 elements costs nothing. Arrays of
Python objects are pickles and are refused, never loaded.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Iterator
from typing import Protocol, cast

import numpy as np
from numpy.lib import format as npy_format

from klcli.errors import InputError
from klcli.io.source import Source, check_piece, first_line


class ByteStream(Protocol):
    """What the .npy stream reader needs: a file, standard input's buffer, or a member of a zip archive."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def tell(self) -> int: ...

def _read_header(stream: ByteStream, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The (shape, fortran_order, dtype) of an ``.npy`` stream positioned at its start."""
    try:
        with warnings.catch_warnings():  # numpy parses the header as a Python literal; odd bytes warn
            warnings.simplefilter("ignore")
            version = npy_format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # noqa: BLE001 — numpy's header parser can fail in many ways on bad bytes
        raise InputError(f"{name}: not a valid .npy file ({first_line(exc)})") from None
    if dtype.hasobject:
        raise InputError(
            f"{name}: holds Python objects (a pickle); klcli never loads pickles: "
            "save the array with a numeric dtype"
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{name}: has dtype {dtype}, not numbers; save it as float32 or float64")
    if len(shape) == 0:
        raise InputError(f"{name}: holds a single number, not a distribution (shape ())")
    _check_shape(name, tuple(shape))
    return tuple(shape), fortran, dtype


MAX_DIMENSIONS = 64  # NumPy's own limit on an array's rank


def _check_shape(name: str, shape: tuple) -> None:
    """A header's shape that NumPy could hold: at most 64 non-negative integer sizes."""
    if len(shape) > MAX_DIMENSIONS:
        raise InputError(f"{name}: not a valid .npy file: its header claims {len(shape)} dimensions "
                         f"(NumPy arrays have at most {MAX_DIMENSIONS})")
    if any(not isinstance(size, int) or size < 0 for size in shape):
        raise InputError(f"{name}: not a valid .npy file: its header claims shape {shape}; "
                         "every size must be a non-negative integer")


def _check_size(name: str, shape: tuple[int, ...], dtype: np.dtype, available: int) -> int:
    needed = math.prod(shape) * dtype.itemsize
    if needed != available:
        state = "is truncated" if needed > available else "has trailing bytes"
        raise InputError(
            f"{name}: {state}: its header claims shape {shape} of {dtype} ({needed} bytes) "
            f"but the file holds {available} bytes of data"
        )
    return needed


def _as_rows(array: np.ndarray) -> np.ndarray:
    """View an N-D array as rows × outcomes (leading axes flattened)."""
    if array.ndim == 1:
        return array.reshape(1, -1)
    if array.flags.c_contiguous or array.ndim == 2:
        return array.reshape(-1, array.shape[-1])
    # A Fortran-ordered N-D array cannot be viewed as rows; walk its first axis.
    return array


def _slices(rows: np.ndarray, block_rows: int) -> Iterator[np.ndarray]:
    if rows.ndim > 2:  # Fortran-ordered N-D: one leading index at a time, copied per block
        for lead in range(rows.shape[0]):
            yield from _slices(np.ascontiguousarray(rows[lead]).reshape(-1, rows.shape[-1]), block_rows)
        return
    for start in range(0, rows.shape[0], block_rows):
        yield rows[start : start + block_rows]


def open_npy(path: str, operand: str) -> Source:
    """A ``.npy`` file, read only: block by block (``array`` maps it whole, for ``klcli.read``)."""
    with open(path, "rb") as stream:
        shape, fortran, dtype = _read_header(stream, path)
        offset = stream.tell()
    _check_size(path, shape, dtype, os.path.getsize(path) - offset)

    def mapped() -> np.ndarray:
        if math.prod(shape) == 0:  # nothing to map (mmap refuses an empty range)
            return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        if math.prod(shape) == 0:
            yield np.empty((0, shape[-1]), dtype=dtype)
            return
        # Read, not memory-mapped: a file truncated while it is read (a dump still being written) is then a
        # short read, reported with the file's name, where a memory map dies of SIGBUS. As fast (bench/run.py).
        with open(path, "rb", buffering=0) as handle:
            if fortran and len(shape) == 2:
                yield from _fortran_row_blocks(handle, path, shape, dtype, offset, block_rows)
                return
            handle.seek(offset)
            yield from stream_blocks(handle, path, shape, fortran, dtype, block_rows)

    return Source(operand, path, "npy", shape, str(dtype), blocks, array=mapped)


def stream_blocks(
    stream: ByteStream, name: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, block_rows: int
) -> Iterator[np.ndarray]:
    """Read an ``.npy`` body from a stream, block by block, with ``readinto``."""
    total = math.prod(shape)
    if fortran:  # column-major rows are scattered through the body: read it whole
        check_piece(name, f"a Fortran-ordered array of shape {shape}", total * dtype.itemsize,
                    "its rows cannot be streamed: save it in C order (np.ascontiguousarray) or as a .npy file")
        body = np.empty(total, dtype=dtype)
        _fill(stream, body, name, 0, total)
        yield from _slices(_as_rows(body.reshape(shape, order="F")), block_rows)
        return
    outcomes = shape[-1] if len(shape) > 1 else total
    n_rows = total // outcomes if outcomes else 0
    if len(shape) == 1:
        block_rows = 1
    for start in range(0, n_rows, block_rows):
        count = min(block_rows, n_rows - start)
        block = np.empty((count, outcomes), dtype=dtype)
        _fill(stream, block.reshape(-1), name, start * outcomes, total)
        yield block
    if n_rows == 0:
        yield np.empty((0, outcomes), dtype=dtype)


FORTRAN_GATHER_BYTES = 32 << 20


def _fortran_row_blocks(handle, name: str, shape: tuple[int, ...], dtype: np.dtype, offset: int,
                        block_rows: int) -> Iterator[np.ndarray]:
    """Blocks of rows of a column-major (rows, outcomes) ``.npy`` body: one read per outcome and block.

    Each outcome's column is contiguous on disk, so a block of rows is ``outcomes`` short reads, gathered into
    a C-ordered block (what the kernels stream over). Other Fortran ranks are read whole (``stream_blocks``).
    """
    n_rows, outcomes = shape
    descriptor = handle.fileno()
    # Gather many rows per pass (each pass costs one read per outcome), then hand them out in blocks.
    gather_rows = max(block_rows, FORTRAN_GATHER_BYTES // max(1, outcomes * dtype.itemsize))
    for start in range(0, n_rows, gather_rows):
        count = min(gather_rows, n_rows - start)
        columns = np.empty((outcomes, count), dtype=dtype)
        for outcome in range(outcomes):
            where = offset + (outcome * n_rows + start) * dtype.itemsize
            column = columns[outcome].data.cast("B")
            got = os.preadv(descriptor, [column], where)
            if got != len(column):
                have = (where - offset + got) // dtype.itemsize
                raise InputError(f"{name}: is truncated: ends after {have} of {n_rows * outcomes} values (was it "
                                 "still being written, or cut short?)")
        rows = np.ascontiguousarray(columns.T)
        del columns
        for first in range(0, count, block_rows):
            yield rows[first : first + block_rows]


def _fill(stream: ByteStream, target: np.ndarray, name: str, done: int, total: int) -> None:
    view = target.data.cast("B")
    filled = 0
    while filled < len(view):
        try:
            got = stream.readinto(view[filled:])
        except Exception as exc:  # noqa: BLE001 — a damaged archive member (zlib, CRC, struct errors)
            raise InputError(f"{name}: cannot be read ({first_line(exc)})") from None
        if not got:
            have = done + filled // target.itemsize
            raise InputError(f"{name}: is truncated: ends after {have} of {total} values (was it still being "
                             "written, or cut short?)")
        filled += got


def open_npy_stream(stream: ByteStream, name: str, operand: str, *, fmt: str, size: int | None = None) -> Source:
    """``.npy`` bytes from a stream (standard input, or a member of an ``.npz``)."""
    shape, fortran, dtype = _read_header(stream, name)
    if size is not None:
        _check_size(name, shape, dtype, size - stream.tell())
    return Source(operand, None if fmt == "stdin-npy" else name, fmt, shape, str(dtype),
                  lambda block_rows: stream_blocks(stream, name, shape, fortran, dtype, block_rows))


TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")


def torch_checkpoint_error(path: str) -> InputError:
    return InputError(
        f"{path}: is a PyTorch checkpoint (torch.save writes pickles), and klcli never unpickles a file (a pickle "
        "can run code); save the tensor as an array: numpy.save('x.npy', tensor.float().numpy()), or "
        "safetensors.torch.save_file({'x': tensor}, 'x.safetensors')"
    )


def is_torch_checkpoint(path: str, names: list[str] | None = None) -> bool:
    """A ``torch.save`` file: a zip holding ``NAME/data.pkl``, or (legacy) a pickle named .pt/.pth/.bin/.ckpt."""
    if names is not None:
        return any(name == "data.pkl" or name.endswith("/data.pkl") for name in names)
    with open(path, "rb") as handle:
        head = handle.read(2)
    return os.path.splitext(path)[1].lower() in TORCH_EXTENSIONS and len(head) == 2 and head[0] == 0x80 \
        and 2 <= head[1] <= 5


def open_npz(path: str, operand: str, key: str | None) -> Source:
    """One array of an ``.npz`` archive, streamed from its (possibly compressed) member."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 — zipfile fails in many ways on damaged archives
        raise InputError(f"{path}: not a valid .npz archive ({first_line(exc)})") from None
    keys = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
    if not keys and is_torch_checkpoint(path, archive.namelist()):
        raise torch_checkpoint_error(path)
    if key is None:
        if len(keys) != 1:
            listing = ", ".join(keys) if keys else "none"
            raise InputError(f"{path}: holds {len(keys)} arrays ({listing}); name one as {path}:KEY")
        key = keys[0]
    if key not in keys:
        raise InputError(f"{path}: has no array {key!r}; it holds: {', '.join(keys) or 'none'}")
    info = archive.getinfo(key + ".npy")
    name = f"{path}:{key}"
    try:
        member = archive.open(info)
    except Exception as exc:  # noqa: BLE001 — as above
        raise InputError(f"{name}: cannot be read ({first_line(exc)})") from None
    # (a zipfile.ZipExtFile, typed as IO[bytes], reads into buffers too)
    source = open_npy_stream(cast(ByteStream, member), name, operand, fmt="npz", size=info.file_size)
    source.path = path
    return source
