"""What each record batch of an Arrow IPC file claims it decodes to, read before anything is decoded.

A compressed Arrow batch is decoded whole when it is read (there is no page
within it to stream), and its buffers say how large they decompress to: an
8-byte little-endian length in front of each compressed buffer. A 15 KB zstd
file can claim a 480 MB batch of zeros. This module walks the IPC messages
(pyarrow's ``MessageReader``, zero-copy over a memory map: the bodies are not
decompressed) and reads, from each message's flatbuffer metadata, the batch's
rows, whether it is compressed, and its buffers; from the body, the claimed
decompressed length of each buffer. The reader then refuses a batch whose
claim is both over the block budget and far beyond the bytes it occupies —
what no real logits dump looks like — before pyarrow allocates it.

Flatbuffers (format/Message.fbs of the Arrow specification): a table begins
with a signed offset back to its vtable; the vtable lists, per field, the
field's offset within the table (0: absent). ``Message`` fields: version,
header_type, header, bodyLength; ``RecordBatch``: length, nodes, buffers,
compression; ``DictionaryBatch``: id, data (a RecordBatch), isDelta.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# MessageHeader union tags (format/Message.fbs).
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
_BUFFER = struct.Struct("<qq")  # Buffer { offset: long; length: long }
_UNCOMPRESSED = -1  # a compressed body's length prefix that says "stored as is"


@dataclass(frozen=True)
class BatchClaim:
    """One record (or dictionary) batch as its metadata describes it."""

    rows: int
    dictionary: bool  # a dictionary batch (its rows are a dictionary's entries, not the table's rows)
    compressed: bool
    stored_bytes: int  # the batch's body in the file
    decoded_bytes: int  # what its buffers claim they decompress to (the body's size when not compressed)


class _Table:
    """A flatbuffer table at ``position`` of ``data``."""

    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position
        self.vtable = position - struct.unpack_from("<i", data, position)[0]
        self.vtable_size = struct.unpack_from("<H", data, self.vtable)[0]

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + entry)[0]
        return self.position + offset if offset else None

    def scalar(self, slot: int, fmt: str, default=0):
        at = self._field(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.data, at)[0]

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return None if at is None else _Table(self.data, at + struct.unpack_from("<I", self.data, at)[0])

    def structs(self, slot: int, size: int) -> tuple[int, int]:
        """(where the vector's elements begin, how many) for a vector of structs of ``size`` bytes."""
        at = self._field(slot)
        if at is None:
            return 0, 0
        vector = at + struct.unpack_from("<I", self.data, at)[0]
        count = struct.unpack_from("<I", self.data, vector)[0]
        if vector + 4 + count * size > len(self.data):
            raise ValueError("a vector runs past the end of the message metadata")
        return vector + 4, count


def _batch_claim(batch: _Table, body, dictionary: bool) -> BatchClaim:
    rows = batch.scalar(0, "q")
    compressed = batch.table(3) is not None
    first, count = batch.structs(2, _BUFFER.size)
    stored = body.size if body is not None else 0
    if not compressed:
        return BatchClaim(rows, dictionary, False, stored, stored)
    decoded = 0
    for index in range(count):
        offset, length = _BUFFER.unpack_from(batch.data, first + index * _BUFFER.size)
        if length < 8:  # an empty buffer carries no length prefix
            continue
        if offset < 0 or offset + 8 > stored:
            raise ValueError("a buffer lies outside the batch's body")
        claimed = struct.unpack_from("<q", memoryview(body)[offset : offset + 8])[0]
        decoded += length - 8 if claimed == _UNCOMPRESSED else claimed
    return BatchClaim(rows, dictionary, True, stored, decoded)


def batch_claims(buffer) -> list[BatchClaim]:
    """The claims of every record and dictionary batch in an IPC file or stream held in ``buffer``.

    ``buffer`` is a pyarrow Buffer (e.g. a memory-mapped file read zero-copy).
    Raises ``ValueError`` for metadata that is not a well-formed flatbuffer.
    """
    import pyarrow as pa

    start = 8 if buffer.size >= 8 and bytes(buffer[:6]) == b"ARROW1" else 0  # file format: magic, then a stream
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(buffer.slice(start)))
    claims: list[BatchClaim] = []
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return claims
        if message.type not in ("record batch", "dictionary"):
            continue
        metadata = message.metadata.to_pybytes()
        try:
            header = _Table(metadata, struct.unpack_from("<I", metadata, 0)[0])
            kind = header.scalar(1, "B")
            batch = header.table(2)
            if batch is not None and kind == _DICTIONARY_BATCH:
                batch = batch.table(1)
            if batch is not None and kind in (_RECORD_BATCH, _DICTIONARY_BATCH):
                claims.append(_batch_claim(batch, message.body, kind == _DICTIONARY_BATCH))
        except struct.error:
            raise ValueError("a message's metadata is cut short") from None
