"""Rows [a, b) of an operand (klcli.io.ranges) are exactly those rows, in every format, reading only them."""

from __future__ import annotations

import numpy as np
import pytest

from klcli.io.operand import open_operand
from klcli.io.ranges import piece_ranges, position_range, row_range
from tests.conftest import write_table
from tests.io.test_llm_formats import write_safetensors

VALUES = np.arange(23 * 5, dtype=np.float64).reshape(23, 5) / 7.0


def _rows(source, block_rows=4):
    blocks = list(source.blocks(block_rows))
    return np.concatenate(blocks) if blocks else np.empty((0, 5))


@pytest.mark.parametrize("fmt", ["npy", "npz", "csv", "parquet", "feather"])
@pytest.mark.parametrize(("start", "stop"), [(0, 23), (0, 1), (22, 23), (3, 17), (7, 14)])
def test_row_range_is_those_rows(tmp_path, fmt, start, stop):
    source = open_operand(write_table(tmp_path / "v", VALUES, fmt))
    np.testing.assert_array_equal(_rows(row_range(source, start, stop)), VALUES[start:stop])


def test_row_range_of_a_memory_map_slices_it(tmp_path):
    np.save(tmp_path / "v.npy", VALUES.reshape(23, 1, 5))  # leading axes are flattened into rows
    source = open_operand(str(tmp_path / "v.npy"))
    for block in row_range(source, 5, 20).blocks(4):
        assert isinstance(block.base, np.memmap) or isinstance(block, np.memmap)
    np.testing.assert_array_equal(_rows(row_range(source, 5, 20)), VALUES[5:20])
    fortran = np.asfortranarray(VALUES.reshape(23, 1, 5))
    np.save(tmp_path / "f.npy", fortran)
    np.testing.assert_array_equal(_rows(row_range(open_operand(str(tmp_path / "f.npy")), 5, 20)), VALUES[5:20])


def test_row_range_of_safetensors_bf16_is_widened(tmp_path):
    bits = (VALUES.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    path = write_safetensors(tmp_path / "v.safetensors", {}, bf16={"x": bits})
    got = _rows(row_range(open_operand(path), 2, 9))
    np.testing.assert_array_equal(got, (bits.astype(np.uint32) << 16).view(np.float32)[2:9])


def test_parquet_decodes_only_the_row_groups_of_the_piece(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    source = open_operand(write_table(tmp_path / "v", VALUES, "parquet"))  # row groups of 7 rows
    asked = []
    original = pq.ParquetFile.iter_batches

    def recording(self, *args, **kwargs):
        asked.append(kwargs.get("row_groups"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording)
    np.testing.assert_array_equal(_rows(row_range(source, 8, 15)), VALUES[8:15])
    assert asked == [[1, 2]]  # rows 7–13 and 14–20


@pytest.mark.parametrize("fmt", ["npy", "csv", "parquet"])
def test_position_range_is_those_values_flattened(tmp_path, fmt):
    source = open_operand(write_table(tmp_path / "v", VALUES, fmt))
    got = np.concatenate([block.reshape(-1) for block in position_range(source, 12, 61).blocks(3)])
    np.testing.assert_array_equal(got, VALUES.reshape(-1)[12:61])


def test_piece_ranges_tile_and_align():
    for total in range(1, 40):
        for pieces in range(1, 9):
            for align in (1, 3):
                if total % align:
                    continue
                ranges = piece_ranges(total, pieces, align)
                assert ranges[0][0] == 0 and ranges[-1][1] == total
                assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
                assert all(a % align == 0 and b > a for a, b in ranges)
                sizes = [b - a for a, b in ranges]
                assert max(sizes) - min(sizes) <= align and len(ranges) == min(pieces, total // align)


def test_piece_ranges_keep_to_whole_shards():
    rng = np.random.default_rng(16)
    for _ in range(300):
        align = int(rng.integers(1, 4))
        sizes = (rng.integers(1, 6, size=int(rng.integers(1, 7))) * align).tolist()
        ends = np.cumsum(sizes).tolist()
        total = ends[-1]
        for pieces in range(1, len(sizes) + 6):
            ranges = piece_ranges(total, pieces, align, ends)
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] and b[1] > b[0] for a, b in zip(ranges, ranges[1:]))
            assert all(a % align == 0 for a, _ in ranges)
            starts = [0, *ends[:-1]]
            if pieces == len(sizes):  # one piece a shard
                assert ranges == list(zip(starts, ends))
            elif pieces < len(sizes):  # whole shards, grouped
                assert len(ranges) == pieces and all(b in ends for _, b in ranges)
            else:  # shards cut, never a piece across a shard's end
                assert all(not (a < end < b) for a, b in ranges for end in ends)
                assert len(ranges) == min(pieces, total // align)


def test_piece_ranges_group_shards_near_equally_and_skip_cuts_inside_a_sequence():
    assert piece_ranges(100, 2, cuts=[10, 20, 45, 60, 100]) == [(0, 45), (45, 100)]
    assert piece_ranges(12, 3, 1, [1, 2, 12]) == [(0, 1), (1, 2), (2, 12)]  # shards of one row stay pieces
    assert piece_ranges(12, 2, align=4, cuts=[6, 12]) == [(0, 4), (4, 12)]  # 6 is inside a sequence: as no cut
    assert piece_ranges(12, 2, align=4, cuts=[8, 12]) == [(0, 8), (8, 12)]


@pytest.mark.parametrize("fmt", ["npy", "parquet", "sharded"])
def test_a_range_of_a_range_is_taken_within_the_piece(tmp_path, fmt):
    if fmt == "sharded":
        (tmp_path / "d").mkdir()
        for index, (a, b) in enumerate([(0, 5), (5, 6), (6, 23)]):
            np.save(tmp_path / "d" / f"part-{index}.npy", VALUES[a:b])
        operand = str(tmp_path / "d")
    else:
        operand = write_table(tmp_path / "v", VALUES, fmt)
    piece = row_range(open_operand(operand), 4, 20)
    np.testing.assert_array_equal(_rows(row_range(piece, 1, 9)), VALUES[5:13])
    flat = position_range(open_operand(operand), 7, 90)
    got = np.concatenate([block.reshape(-1) for block in position_range(flat, 3, 40).blocks(6)])
    np.testing.assert_array_equal(got, VALUES.reshape(-1)[10:47])
