"""Random bytes and mutations of valid files fed to every reader: a result or a klcli error, nothing else.

A short fixed budget runs in the suite; a longer run:
    KLCLI_FUZZ_EXAMPLES=5000 python -m pytest tests/reliability/test_fuzz.py
"""

from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klcli.commands.common import Reading
from klcli.errors import KlcliError
from klcli.io.operand import open_operand

EXAMPLES = int(os.environ.get("KLCLI_FUZZ_EXAMPLES", "40"))
VALUES = np.array([[0.25, 0.25, 0.5], [0.1, 0.6, 0.3]])


def _valid(fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, VALUES)
    elif fmt == "npz":
        np.savez(buffer, x=VALUES)
    elif fmt == "csv":
        buffer.write(b"a,b,c\n0.25,0.25,0.5\n0.1,0.6,0.3\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({"v": VALUES.tolist()}), buffer)
    elif fmt == "feather":
        feather.write_feather(pa.table({"a": VALUES[:, 0], "b": VALUES[:, 1], "c": VALUES[:, 2]}), buffer)
    elif fmt == "safetensors":
        data = VALUES.tobytes()
        header = json.dumps({"x": {"dtype": "F64", "shape": [2, 3], "data_offsets": [0, len(data)]}}).encode()
        buffer.write(struct.pack("<Q", len(header)) + header + data)
    elif fmt == "kld":
        n_ctx, n_vocab, n_chunk = 4, 3, 1
        buffer.write(b"_logits_" + struct.pack("<iii", n_ctx, n_vocab, n_chunk) + bytes(4 * n_ctx))
        buffer.write(struct.pack("<ff", 1e-4, -2.0) + struct.pack("<4H", 1, 2, 3, 0))
    elif fmt == "json":
        buffer.write(json.dumps([{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "b", "logprob": -2.0}]}])
                     .encode())
    return buffer.getvalue()


FORMATS = ("npy", "npz", "csv", "parquet", "feather", "safetensors", "kld", "json")


def _exercise(path) -> None:
    """Open, stream and convert every block; only a klcli error may escape."""
    try:
        source = open_operand(str(path), "P")
        for start, block in enumerate(source.blocks(2)):
            Reading(normalize=True).log_rows(np.asarray(block, dtype=np.float64) if block.dtype.kind != "f"
                                             else block, source.forced_kind or "probs", source, start)
    except KlcliError:
        pass


@st.composite
def mutated(draw, fmt):
    data = bytearray(_valid(fmt))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at: at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_files_read(tmp_path, fmt):
    path = tmp_path / f"valid.{fmt}"
    path.write_bytes(_valid(fmt))
    source = open_operand(str(path))
    assert sum(block.shape[0] for block in source.blocks(2)) > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutations_give_a_result_or_a_klcli_error(tmp_path, fmt):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(mutated(fmt))
    def check(data):
        path = tmp_path / f"fuzz.{fmt}"
        path.write_bytes(data)
        _exercise(path)

    check()


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_give_a_klcli_error(tmp_path, fmt):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(min_size=0, max_size=512))
    def check(data):
        path = tmp_path / f"random.{fmt}"
        path.write_bytes(data)
        _exercise(path)

    check()


def test_regression_parquet_with_a_column_name_that_is_not_utf8(tmp_path):
    """Found by a long fuzz run: pyarrow raised UnicodeDecodeError reading such a schema."""
    data = _valid("parquet")
    assert b"\x07element" in data
    path = tmp_path / "bad.parquet"
    path.write_bytes(data.replace(b"\x07element", b"\x07\x80lement", 1))
    _exercise(path)
