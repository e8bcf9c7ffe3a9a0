"""The record-batch claims read from Arrow IPC metadata, against what pyarrow itself decodes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from klcli.io import arrow_ipc
from klcli.io.arrow_ipc import batch_claims

pa = pytest.importorskip("pyarrow")


def _batch(rows: int):
    logits = np.random.default_rng(rows).standard_normal((rows, 300)).astype(np.float32)
    return pa.record_batch({
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), 300),
        "ragged": pa.array([[0.5, 0.5]] * (rows - 1) + [[1.0]]),
        # One dictionary for every batch (the file format allows no replacement).
        "words": pa.DictionaryArray.from_arrays(pa.array(([0, 1, None, 2] * rows)[:rows], pa.int32()),
                                                pa.array(["a", "bb", "c"])),
    })


def _write(path, batches, compression, layout):
    opener = pa.ipc.new_file if layout == "file" else pa.ipc.new_stream
    with opener(str(path), batches[0].schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        for batch in batches:
            writer.write_batch(batch)
    with pa.memory_map(str(path), "r") as mapped:
        return batch_claims(mapped.read_buffer())


def _buffer_bytes(batch) -> int:
    """What decoding ``batch`` allocates: every buffer of every column, dictionaries apart."""
    total = 0
    for column in batch.columns:
        array = column.indices if pa.types.is_dictionary(column.type) else column
        total += sum(buffer.size for buffer in array.buffers() if buffer is not None)
    return total


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
@pytest.mark.parametrize("layout", ["file", "stream"])
def test_claims_are_the_decoded_batches(tmp_path, compression, layout):
    batches = [_batch(50), _batch(7), _batch(1)]
    claims = _write(tmp_path / "t.arrow", batches, compression, layout)
    records = [claim for claim in claims if not claim.dictionary]
    assert [claim.rows for claim in records] == [50, 7, 1]
    assert len(claims) - len(records) == 1  # the dictionary of "words"
    assert all(claim.compressed == (compression is not None) for claim in claims)
    for claim, batch in zip(records, batches):
        if compression is None:  # decoded zero-copy from the body, which holds the buffers 8-byte aligned
            assert _buffer_bytes(batch) <= claim.decoded_bytes == claim.stored_bytes
        else:  # each buffer's length prefix: exactly the buffer written
            assert claim.decoded_bytes == _buffer_bytes(batch)


def test_a_vector_past_the_metadata_is_a_value_error(tmp_path):
    claims = _write(tmp_path / "t.arrow", [_batch(5)], "zstd", "stream")
    assert claims
    with pa.memory_map(str(tmp_path / "t.arrow"), "r") as mapped:
        reader = pa.ipc.MessageReader.open_stream(mapped)
        message = next(m for m in iter(reader.read_next_message, None) if m.type == "record batch")
        metadata = bytearray(message.metadata.to_pybytes())
        header = arrow_ipc._Table(bytes(metadata), struct.unpack_from("<I", metadata, 0)[0])
        batch = header.table(2)
        at = batch._field(2)
        vector = at + struct.unpack_from("<I", metadata, at)[0]
        struct.pack_into("<I", metadata, vector, 1 << 30)  # a billion buffers, in a few hundred bytes
        damaged = arrow_ipc._Table(bytes(metadata), struct.unpack_from("<I", metadata, 0)[0]).table(2)
        with pytest.raises(ValueError, match="runs past the end"):
            arrow_ipc._batch_claim(damaged, message.body, False)
