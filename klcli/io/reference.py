"""klcli's top-K reference files: safetensors with a documented metadata block.

Tensors (N positions, K stored tokens), in this order in the data:

* ``top_ids``        I32 (N, K) — the K most probable token ids, most probable first, ties by lowest id;
* ``top_logprobs``   F32 or F64 (N, K) — their log-probabilities;
* ``tail_logprob``   F64 (N,) — log of the mass of the other V − K tokens (−inf when K = V);
* ``labels``         I64 (N,) — with labels: the observed token (``ignore_index`` where not scored);
* ``label_logprob``  F64 (N,) — its log-probability (NaN where not scored).

``__metadata__`` (strings, as safetensors requires): ``format`` = ``klcli-reference``, ``version`` = ``1``,
``vocab``, ``top_k``, ``rows``, ``has_labels`` (``true``/``false``), ``ignore_index``, ``temperature``,
``source`` (what it was written from), ``klcli_version``, and ``as_stored_below`` (``-16`` for a reference
written from a llama.cpp base file, whose rows are used as stored; empty otherwise).

Written block by block: each tensor's rows go to its own unnamed temporary file in the target's folder
(memory stays bounded, and the row count need not be known in advance); then the header and the pieces are
copied into a temporary file that is renamed over the target (:func:`klcli.io.output.atomically`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from klcli.errors import InputError, OutputError
from klcli.io.source import Source, rows_per_block

FORMAT = "klcli-reference"
VERSION = "1"
_ORDER = ("top_ids", "top_logprobs", "tail_logprob", "labels", "label_logprob")
_NAMES = {np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.float32): "F32",
          np.dtype(np.float64): "F64"}


@dataclass(frozen=True)
class Layout:
    """What a reference file holds, from its metadata."""

    vocab: int
    top_k: int
    rows: int
    has_labels: bool
    ignore_index: int
    temperature: float
    as_stored_below: float | None
    logprob_dtype: str  # "float32" or "float64"
    source: str
    leading: tuple[int, ...] = ()  # the source's shape before its vocabulary axis: (N,) or (B, T)

    def kernel_options(self) -> dict:
        """How the kernels read this file's packed rows (see :mod:`klcli.core.reference`)."""
        options: dict = {"kind": "reference",
                         "reference": {"top_k": self.top_k, "vocab": self.vocab, "has_labels": self.has_labels}}
        if self.as_stored_below is not None:
            options["as_stored_below"] = self.as_stored_below
        return options


def is_reference_header(header: dict) -> bool:
    metadata = header.get("__metadata__")
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT


class ReferenceWriter:
    """Streams reference rows into a safetensors file, atomically (see the module)."""

    def __init__(self, path: str, *, vocab: int, top_k: int, has_labels: bool, logprob_dtype: str,
                 metadata: dict[str, str]):
        self.path, self.vocab, self.top_k, self.has_labels = path, vocab, top_k, has_labels
        self.dtypes = {"top_ids": np.dtype("<i4"), "top_logprobs": np.dtype(logprob_dtype).newbyteorder("<"),
                       "tail_logprob": np.dtype("<f8"), "labels": np.dtype("<i8"), "label_logprob": np.dtype("<f8")}
        self.names = [name for name in _ORDER if has_labels or not name.startswith("label")]
        self.metadata = metadata
        self.rows = 0
        folder = os.path.dirname(os.path.abspath(path))
        try:
            self.pieces = {name: tempfile.TemporaryFile(dir=folder, prefix=".klcli-") for name in self.names}
        except OSError as exc:
            raise OutputError(f"-o {path}: {exc.strerror or exc}") from None

    def write(self, ids, logprobs, tail, labels=None, label_logprobs=None) -> None:
        columns = {"top_ids": ids, "top_logprobs": logprobs, "tail_logprob": tail, "labels": labels,
                   "label_logprob": label_logprobs}
        try:
            for name in self.names:
                self.pieces[name].write(np.ascontiguousarray(columns[name], dtype=self.dtypes[name]).tobytes())
        except OSError as exc:
            raise OutputError(f"-o {self.path}: {exc.strerror or exc}") from None
        self.rows += int(np.shape(tail)[0])

    def header(self) -> bytes:
        shapes = {"top_ids": [self.rows, self.top_k], "top_logprobs": [self.rows, self.top_k]}
        entries: dict = {"__metadata__": {**self.metadata, "rows": str(self.rows)}}
        offset = 0
        for name in self.names:
            shape = shapes.get(name, [self.rows])
            size = math.prod(shape) * self.dtypes[name].itemsize
            entries[name] = {"dtype": _NAMES[np.dtype(self.dtypes[name].str.replace("<", "="))],
                             "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(entries, separators=(",", ":")).encode()
        text += b" " * (-(len(text)) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        return len(text).to_bytes(8, "little") + text

    def finish(self) -> int:
        """Write the file (header, then each tensor), atomically; its size in bytes."""
        from klcli.io.output import atomically

        head = self.header()

        def write_into(handle: int) -> None:
            with os.fdopen(os.dup(handle), "wb", closefd=True) as out:
                out.write(head)
                for name in self.names:
                    piece = self.pieces[name]
                    piece.seek(0)
                    shutil.copyfileobj(piece, out, 1 << 20)

        existing = os.stat(self.path) if os.path.exists(self.path) else None
        atomically(self.path, write_into, existing)
        self.close()
        return os.path.getsize(self.path)

    def close(self) -> None:
        for piece in self.pieces.values():
            piece.close()


def _number(metadata: dict, key: str, path: str, kind=int):
    try:
        value = kind(metadata[key])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: a klcli reference file's metadata needs {key!r} (a number); it has "
                         f"{metadata.get(key)!r}: the file is damaged; write it again with klcli reference") from None
    return value


def layout_of(path: str, header: dict) -> Layout:
    """The metadata of a reference file, checked."""
    metadata = header["__metadata__"]
    version = metadata.get("version")
    if version != VERSION:
        raise InputError(f"{path}: is a klcli reference file of version {version!r}; this klcli reads version "
                         f"{VERSION} (write it again with this klcli's reference command, or upgrade klcli)")
    vocab, top_k = _number(metadata, "vocab", path), _number(metadata, "top_k", path)
    if vocab < 1 or top_k < 1 or top_k > vocab:
        raise InputError(f"{path}: a reference file with top_k={top_k} over vocab={vocab}; K must be between 1 "
                         "and the vocabulary size: the file is damaged; write it again with klcli reference")
    has_labels = metadata.get("has_labels") == "true"
    rows = _number(metadata, "rows", path)
    try:
        leading = tuple(int(size) for size in str(metadata.get("shape") or rows).split(","))
    except ValueError:
        leading = ()
    if math.prod(leading) != rows or not leading or min(leading) < 0:
        raise InputError(f"{path}: a reference file's metadata gives shape {metadata.get('shape')!r} for {rows} "
                         "rows: the file is damaged; write it again with klcli reference")
    stored_below = metadata.get("as_stored_below") or None
    return Layout(vocab=vocab, top_k=top_k, rows=rows, has_labels=has_labels, leading=leading,
                  ignore_index=_number(metadata, "ignore_index", path) if has_labels else -100,
                  temperature=_number(metadata, "temperature", path, float),
                  as_stored_below=None if stored_below is None else _number(metadata, "as_stored_below", path,
                                                                            float),
                  logprob_dtype="float32", source=str(metadata.get("source", "")))


def open_reference(path: str, operand: str, header: dict, tensor) -> Source:
    """A reference file as a Source of packed rows (:mod:`klcli.core.reference`), shape (N, V).

    ``tensor(name)`` gives (dtype, shape, offset, dtype name) of a tensor, checked against the file's size.
    """
    from klcli.core.reference import check_rows, packed

    layout = layout_of(path, header)
    expected = {"top_ids": ((layout.rows, layout.top_k), ("I32", "I64")),
                "top_logprobs": ((layout.rows, layout.top_k), ("F32", "F64")),
                "tail_logprob": ((layout.rows,), ("F64",)),
                "labels": ((layout.rows,), ("I32", "I64")), "label_logprob": ((layout.rows,), ("F64",))}
    names = [name for name in _ORDER if layout.has_labels or not name.startswith("label")]
    maps = {}
    for name in names:
        if name not in header:
            raise InputError(f"{path}: a klcli reference file needs the tensor {name!r}; it holds "
                             f"{', '.join(k for k in header if k != '__metadata__')}: the file is damaged")
        dtype, shape, offset, dtype_name = tensor(name)
        want_shape, want_dtypes = expected[name]
        if tuple(shape) != want_shape or dtype_name not in want_dtypes:
            raise InputError(f"{path}: tensor {name!r} is {dtype_name} of shape {list(shape)}; a reference of "
                             f"{layout.rows} rows and K={layout.top_k} needs {' or '.join(want_dtypes)} of shape "
                             f"{list(want_shape)}: the file is damaged")
        maps[name] = (dtype, shape, offset)
    logprob_dtype = "float64" if tensor("top_logprobs")[3] == "F64" else "float32"
    layout = Layout(**{**layout.__dict__, "logprob_dtype": logprob_dtype})
    as_stored = layout.as_stored_below is not None

    def mapped(name: str) -> np.ndarray:
        dtype, shape, offset = maps[name]
        if not math.prod(shape):
            return np.empty(shape, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)

    def blocks(block_rows: int):
        arrays = {name: mapped(name) for name in names}
        for start in range(0, layout.rows, block_rows):
            stop = min(start + block_rows, layout.rows)
            block = packed(arrays["top_ids"][start:stop], arrays["top_logprobs"][start:stop],
                           arrays["tail_logprob"][start:stop],
                           *((arrays["labels"][start:stop], arrays["label_logprob"][start:stop])
                             if layout.has_labels else ()))
            check_rows(block, top_k=layout.top_k, vocab=layout.vocab, name=path, first_row=start,
                       stored=logprob_dtype, as_stored=as_stored,
                       ignore_index=layout.ignore_index if layout.has_labels else None)
            yield block

    def labels(block_rows: int):
        stored = mapped("labels")
        for start in range(0, layout.rows, block_rows):
            yield np.asarray(stored[start : start + block_rows], dtype=np.int64).reshape(-1, 1)

    source = Source(operand, path, FORMAT, (*layout.leading, layout.vocab), logprob_dtype, blocks)
    source.forced_kind = "reference"
    source.kernel_options = layout.kernel_options()
    source.reference = layout
    if layout.has_labels:
        source.labels = labels
    return source


def packed_width(layout: Layout) -> int:
    return 2 * layout.top_k + 1 + (2 if layout.has_labels else 0)


def reference_blocks_rows(layout: Layout) -> int:
    return rows_per_block(packed_width(layout))
