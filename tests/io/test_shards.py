"""Sharded operands (SPEC §3): globs and directories read as one input, in natural order, shard by shard."""

from __future__ import annotations

import os

import numpy as np
import pytest

import klcli
from klcli.errors import InputError, ShapeError
from klcli.io.operand import open_operand
from klcli.io.shards import locate, natural_key


def _split(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    assert sum(sizes) == values.shape[0]
    return np.split(values, np.cumsum(sizes)[:-1])


def _save_npy(folder, values, sizes, name="part-{}.npy"):
    folder.mkdir(parents=True, exist_ok=True)
    for index, piece in enumerate(_split(values, sizes)):
        np.save(folder / name.format(index), piece)


@pytest.fixture
def rows():
    return np.random.default_rng(3).normal(size=(11, 4))


def test_natural_order_puts_part_2_before_part_10():
    names = ["part-10.npy", "part-2.npy", "part-1.npy", "part-0.npy"]
    assert sorted(names, key=natural_key) == ["part-0.npy", "part-1.npy", "part-2.npy", "part-10.npy"]
    assert sorted(names) != sorted(names, key=natural_key)  # (lexical order would differ)


def test_glob_is_one_source_of_every_shards_rows_in_natural_order(tmp_path, rows):
    sizes = [1, 3, 1, 2, 1, 1, 2]  # eleven rows over uneven shards, some of one row
    _save_npy(tmp_path / "d", rows, sizes)
    source = open_operand(str(tmp_path / "d" / "part-*.npy"), "P")
    assert source.shape == (11, 4) and source.format == "npy" and len(source.shards) == len(sizes)
    assert [shard.count("rows") for shard in source.shards] == sizes
    assert np.array_equal(np.concatenate(list(source.blocks(2))), rows)
    assert source.label == f"P ({tmp_path / 'd' / 'part-*.npy'})"
    assert source.describe()["shards"] == len(sizes)


def test_ten_or_more_shards_are_read_in_natural_order(tmp_path, rows):
    _save_npy(tmp_path / "d", rows, [1] * 11)  # part-0 … part-10
    read = klcli.read(str(tmp_path / "d"))
    assert np.array_equal(read, rows)
    assert [os.path.basename(s.path) for s in open_operand(str(tmp_path / "d")).shards][-2:] == \
        ["part-9.npy", "part-10.npy"]


def test_a_directory_skips_hidden_files_and_parquet_sidecars(tmp_path, rows):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "dataset"
    folder.mkdir()
    for index, piece in enumerate(_split(rows, [5, 1, 5])):
        pq.write_table(pa.table({"v": pa.array(piece.tolist(), type=pa.list_(pa.float64()))}),
                       folder / f"part-{index}.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_metadata").write_bytes(b"PAR1 not data")
    (folder / ".part-0.parquet.crc").write_bytes(b"\0\1")
    assert np.array_equal(klcli.read(str(folder)), rows)
    assert np.array_equal(klcli.read(f"{folder}:v"), rows)  # DIR:SELECTOR


def test_glob_with_a_selector_reads_that_array_of_every_shard(tmp_path, rows):
    folder = tmp_path / "z"
    folder.mkdir()
    for index, piece in enumerate(_split(rows, [4, 7])):
        np.savez(folder / f"part-{index}.npz", p=piece, other=np.zeros(2))
    assert np.array_equal(klcli.read(f"{folder}/part-*.npz:p"), rows)


def test_safetensors_shards_with_a_key(tmp_path, rows):
    from tests.io.test_llm_formats import write_safetensors

    folder = tmp_path / "st"
    folder.mkdir()
    for index, piece in enumerate(_split(rows.astype(np.float32), [2, 9])):
        write_safetensors(folder / f"shard-{index}.safetensors", {"logits": piece, "other": np.zeros(3, np.float32)})
    read = klcli.read(f"{folder}/*.safetensors:logits")
    assert read.dtype == np.float32 and np.array_equal(read, rows.astype(np.float32))


def test_one_dimensional_shards_are_one_vector(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    ids = np.arange(10, dtype=np.int64)
    for index, piece in enumerate(np.split(ids, [3, 4])):
        np.save(folder / f"ids-{index}.npy", piece.astype(np.int32 if index == 1 else np.int64))
    source = open_operand(str(folder))
    assert source.shape == (10,) and source.dtype == "int64"
    assert np.array_equal(klcli.read(str(folder)), ids)
    assert locate(source, 3, "values") == (str(folder / "ids-1.npy"), 0)
    assert locate(source, 9, "values") == (str(folder / "ids-2.npy"), 5)


def test_three_d_shards_concatenate_on_their_first_axis(tmp_path):
    values = np.random.default_rng(4).normal(size=(5, 3, 2))
    folder = tmp_path / "btv"
    folder.mkdir()
    for index, piece in enumerate(np.split(values, [2])):
        np.save(folder / f"b{index}.npy", piece)
    source = open_operand(str(folder))
    assert source.shape == (5, 3, 2)
    assert locate(source, 7, "rows") == (str(folder / "b1.npy"), 1)  # flat row 7 = sequence 2, position 1
    assert locate(source, 3, "sequences") == (str(folder / "b1.npy"), 1)
    assert np.array_equal(klcli.read(str(folder)), values)


def test_inline_numbers_and_file_selectors_are_unchanged(tmp_path, rows):
    assert klcli.read("0.1,0.9").tolist() == [0.1, 0.9]
    np.savez(tmp_path / "p.npz", p=rows)
    os.chdir(tmp_path)
    assert np.array_equal(klcli.read("p.npz:p"), rows)


def test_a_literal_file_name_with_glob_characters_is_a_file(tmp_path, rows):
    np.save(tmp_path / "run[1].npy", rows)
    source = open_operand(str(tmp_path / "run[1].npy"))
    assert source.shards == () and source.shape == (11, 4)


# --- bad shards -------------------------------------------------------------------------------------------------


def test_a_glob_matching_nothing_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "part-*.npy")
    with pytest.raises(InputError, match=rf"^{pattern.replace('*', '[*]')}: the pattern matches no file"):
        open_operand(pattern)


def test_a_directory_mixing_formats_lists_them(tmp_path, rows):
    folder = tmp_path / "mixed"
    _save_npy(folder, rows, [5, 6])
    (folder / "extra.csv").write_text("a,b\n0.5,0.5\n")
    with pytest.raises(InputError, match=r"holds files of more than one format \(npy: part-0.npy, part-1.npy; "
                                         r"csv: extra.csv\)"):
        open_operand(str(folder))


def test_a_directory_of_folders_says_to_use_a_glob(tmp_path, rows):
    (tmp_path / "d" / "year=2024").mkdir(parents=True)
    with pytest.raises(InputError, match=r"holds folders \(year=2024\).*with a glob"):
        open_operand(str(tmp_path / "d"))


def test_a_corrupt_shard_is_named(tmp_path, rows):
    folder = tmp_path / "d"
    _save_npy(folder, rows, [3, 3, 5])
    data = (folder / "part-1.npy").read_bytes()
    (folder / "part-1.npy").write_bytes(data[:-8])  # truncated
    with pytest.raises(InputError, match=rf"^{folder / 'part-1.npy'}: is truncated"):
        open_operand(str(folder))
    (folder / "part-1.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match=rf"^{folder / 'part-1.npy'}: not a valid .npy file"):
        open_operand(str(folder))


def test_shards_of_different_widths_are_refused_naming_the_shard(tmp_path, rows):
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "part-0.npy", rows)
    np.save(folder / "part-1.npy", rows[:, :3])
    with pytest.raises(ShapeError, match=rf"^{folder / 'part-1.npy'}: has 3 outcomes per row but "
                                         rf"{folder / 'part-0.npy'} has 4"):
        open_operand(str(folder))


def test_shards_of_different_float_dtypes_are_refused(tmp_path, rows):
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "part-0.npy", rows)
    np.save(folder / "part-1.npy", rows.astype(np.float32))
    with pytest.raises(ShapeError, match=r"part-1.npy: holds float32 values but .*part-0.npy holds float64"):
        open_operand(str(folder))


def test_only_one_shard_is_open_at_a_time_while_streaming(tmp_path, rows, monkeypatch):
    """Shards are opened one after the other as they are read, never all at once."""
    from klcli.io import operand as operand_module

    _save_npy(tmp_path / "d", rows, [1] * 11)
    source = open_operand(str(tmp_path / "d"))
    opened = []
    real = operand_module.open_file
    monkeypatch.setattr(operand_module, "open_file", lambda *a: opened.append(a[0]) or real(*a))
    stream = source.blocks(4)
    next(stream)
    assert len(opened) == 1
    list(stream)
    assert len(opened) == 11


def test_a_directory_with_a_trailing_slash_and_a_recursive_glob(tmp_path, rows):
    _save_npy(tmp_path / "run" / "a", rows[:4], [4])
    _save_npy(tmp_path / "run" / "b", rows[4:], [2, 5])
    assert np.array_equal(klcli.read(f"{tmp_path / 'run' / 'a'}/"), rows[:4])
    assert np.array_equal(klcli.read(f"{tmp_path / 'run'}/**/*.npy"), rows)


def test_a_glob_skips_sidecars_unless_it_names_them(tmp_path, rows):
    _save_npy(tmp_path / "out", rows, [6, 5])
    (tmp_path / "out" / "_SUCCESS").write_bytes(b"")
    assert np.array_equal(klcli.read(f"{tmp_path / 'out'}/*"), rows)
    with pytest.raises(InputError, match="_SUCCESS: is empty"):
        open_operand(f"{tmp_path / 'out'}/_*")


def test_llama_base_file_shards_carry_their_tokens(tmp_path):
    from tests.io.test_llm_formats import write_llama_base

    rng = np.random.default_rng(9)
    n_ctx, n_vocab = 16, 33
    logits = rng.normal(0, 3, size=(3, n_ctx - 1 - n_ctx // 2, n_vocab))
    tokens = rng.integers(0, n_vocab, size=(3, n_ctx))
    write_llama_base(tmp_path / "whole.kld", logits, tokens, n_ctx)
    (tmp_path / "parts").mkdir()
    write_llama_base(tmp_path / "parts" / "chunk-0.kld", logits[:1], tokens[:1], n_ctx)
    write_llama_base(tmp_path / "parts" / "chunk-1.kld", logits[1:], tokens[1:], n_ctx)
    whole, parts = open_operand(str(tmp_path / "whole.kld")), open_operand(str(tmp_path / "parts"))
    assert parts.shape == whole.shape and parts.forced_kind == whole.forced_kind
    assert np.array_equal(np.concatenate(list(parts.blocks(5))), np.concatenate(list(whole.blocks(5))))
    assert np.array_equal(np.concatenate(list(parts.labels(5))), np.concatenate(list(whole.labels(5))))


# --- pieces of a sharded operand read only their shards (klcli.io.ranges) ---------------------------------------


def _by_name(read: dict[str, int]) -> dict[str, int]:
    return {os.path.basename(path): count for path, count in read.items()}


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_row_range_reads_only_the_shards_it_overlaps(tmp_path, rows, shard_reads, fmt):
    from klcli.io.ranges import row_range

    sizes = [2, 3, 1, 4, 1]  # ends 2, 5, 6, 10, 11
    if fmt == "npy":
        _save_npy(tmp_path / "d", rows, sizes)
    else:
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        (tmp_path / "d").mkdir()
        for index, piece in enumerate(_split(rows, sizes)):
            pq.write_table(pa.table({"v": pa.array(piece.tolist(), type=pa.list_(pa.float64()))}),
                           tmp_path / "d" / f"part-{index}.parquet")
    source = open_operand(str(tmp_path / "d"))
    for start, stop, wanted in [(3, 8, {"part-1": 2, "part-2": 1, "part-3": 2}), (0, 2, {"part-0": 2}),
                                (10, 11, {"part-4": 1}), (5, 6, {"part-2": 1}), (0, 11, dict(zip(
                                    [f"part-{i}" for i in range(5)], sizes)))]:
        shard_reads.clear()
        got = np.concatenate(list(row_range(source, start, stop).blocks(2)))
        np.testing.assert_array_equal(got, rows[start:stop])
        read = {name.split(".")[0]: count for name, count in _by_name(shard_reads).items()}
        assert read == wanted, (start, stop)


def test_pieces_of_a_sharded_operand_read_each_row_once(tmp_path, shard_reads):
    """(B, T, V) shards, pieces of positions: every shard's rows are read once over all the pieces."""
    from klcli.io.ranges import piece_ranges, row_range

    values = np.random.default_rng(5).normal(size=(7, 3, 4))
    _save_npy(tmp_path / "d", values, [2, 1, 4])  # 6, 3 and 12 positions
    source = open_operand(str(tmp_path / "d"))
    shard_reads.clear()
    pieces = [np.concatenate(list(row_range(source, a, b).blocks(5))) for a, b in piece_ranges(21, 4, align=3)]
    np.testing.assert_array_equal(np.concatenate(pieces), values.reshape(-1, 4))
    assert _by_name(shard_reads) == {"part-0.npy": 6, "part-1.npy": 3, "part-2.npy": 12}


def test_a_position_range_of_sharded_labels_reads_only_its_shards(tmp_path, shard_reads):
    from klcli.io.ranges import position_range

    labels = np.arange(3 * 11).reshape(11, 3)  # 2-D label shards: positions are their values, flattened
    _save_npy(tmp_path / "d", labels, [4, 2, 5])  # values 0–12, 12–18, 18–33
    flat = np.arange(33)
    np.save(tmp_path / "one.npy", flat)
    _save_npy(tmp_path / "v", flat, [10, 5, 18])  # 1-D shards: one vector
    for operand, start, stop, wanted in [("d", 13, 20, {"part-1.npy": 5, "part-2.npy": 2}),
                                         ("d", 0, 12, {"part-0.npy": 12}), ("v", 12, 15, {"part-1.npy": 3}),
                                         ("v", 9, 33, {"part-0.npy": 1, "part-1.npy": 5, "part-2.npy": 18})]:
        source = open_operand(str(tmp_path / operand))
        shard_reads.clear()
        got = np.concatenate([block.reshape(-1) for block in position_range(source, start, stop).blocks(4)])
        np.testing.assert_array_equal(got, flat[start:stop])
        assert _by_name(shard_reads) == wanted, (operand, start, stop)
