"""Every input format and operand form gives the same rows, streamed in blocks."""

from __future__ import annotations

import numpy as np
import pytest

from klcli.engine import paired_blocks
from klcli.errors import ShapeError
from klcli.io.operand import open_operand, parse_inline
from tests.conftest import FORMATS, write_table

scipy_stats = pytest.importorskip("scipy.stats")


def _rows(source, block_rows=3):
    blocks = list(source.blocks(block_rows))
    return np.concatenate(blocks) if blocks else np.empty((0, 0))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_the_same_rows(tmp_path, fmt):
    values = np.random.default_rng(0).dirichlet(np.ones(6), size=17)
    source = open_operand(write_table(tmp_path / "p", values, fmt), "P")
    np.testing.assert_array_equal(_rows(source), values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_agrees_with_scipy_in_every_format(tmp_path, cli, fmt):
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(9), size=23), rng.dirichlet(np.ones(9), size=23)
    run = cli("kl", write_table(tmp_path / "p", p, fmt), write_table(tmp_path / "q", q, fmt), "--json", "--per-row")
    assert run.code == 0, run.err
    np.testing.assert_allclose(run.json()["per_row"]["kl"], scipy_stats.entropy(p, q, axis=1), rtol=1e-9)


def test_npy_is_read_in_blocks_and_nd_shapes_flatten(tmp_path):
    values = np.random.default_rng(2).dirichlet(np.ones(4), size=(3, 5)).astype(np.float32)
    np.save(tmp_path / "p.npy", values)
    source = open_operand(str(tmp_path / "p.npy"))
    assert source.shape == (3, 5, 4) and source.dtype == "float32"
    first = next(source.blocks(4))
    assert first.shape == (4, 4)  # read block by block (not a memory map: a file cut short is then an error)
    np.testing.assert_array_equal(_rows(source, 4), values.reshape(15, 4))


def test_fortran_ordered_npy(tmp_path):
    values = np.asfortranarray(np.random.default_rng(3).dirichlet(np.ones(4), size=(2, 3)))
    np.save(tmp_path / "f.npy", values)
    np.testing.assert_array_equal(_rows(open_operand(str(tmp_path / "f.npy")), 2), values.reshape(6, 4))


def test_inline_forms():
    assert parse_inline("0.1,0.2,0.7").shape == (3,)
    assert parse_inline("0.1,0.9;0.5,0.5").tolist() == [[0.1, 0.9], [0.5, 0.5]]
    assert open_operand("1e-3,0.999").shape == (2,)


def test_table_selectors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,a,b,c\n1,0.2,0.3,0.5\n2,0.1,0.1,0.8\n")
    both = open_operand(f"{path}:a,b,c")
    np.testing.assert_array_equal(_rows(both), [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    column = open_operand(f"{path}:c")  # one column is one distribution over the rows
    assert column.shape == (None,)
    np.testing.assert_array_equal(_rows(column), [[0.5, 0.8]])


def test_npz_member_streams_without_mmap(tmp_path):
    values = np.arange(40, dtype=np.float64).reshape(10, 4)
    np.savez_compressed(tmp_path / "a.npz", x=values)
    source = open_operand(f"{tmp_path / 'a.npz'}:x")
    assert [b.shape[0] for b in source.blocks(4)] == [4, 4, 2]


def test_stdin_csv_and_npy():
    import io

    csv = open_operand("-", stdin=io.BufferedReader(io.BytesIO(b"0.5,0.5\n0.9,0.1\n")))
    np.testing.assert_array_equal(_rows(csv), [[0.5, 0.5], [0.9, 0.1]])
    buffer = io.BytesIO()
    np.save(buffer, np.eye(3))
    npy = open_operand("-", stdin=io.BufferedReader(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(_rows(npy, 2), np.eye(3))


def test_pairing_broadcasts_a_single_row_and_recuts_blocks():
    many = [np.ones((2, 3)), np.ones((5, 3)), np.ones((1, 3))]
    single = [np.full((1, 3), 2.0)]
    pairs = list(paired_blocks(iter(many), iter(single), block_rows=3))
    assert [(start, p.shape[0], q.shape[0]) for start, p, q in pairs] == [(0, 3, 1), (3, 3, 1), (6, 2, 1)]
    pairs = list(paired_blocks(iter([np.ones((4, 3))]), iter([np.ones((1, 3))] * 4), block_rows=3))
    assert [p.shape[0] for _, p, _ in pairs] == [3, 1]


def test_pairing_names_mismatched_shapes():
    with pytest.raises(ShapeError, match="P has 4 rows but Q has 3"):
        list(paired_blocks(iter([np.ones((4, 2))]), iter([np.ones((3, 2))]), block_rows=2))
    with pytest.raises(ShapeError, match="P has 2 outcomes per row but Q has 3"):
        list(paired_blocks(iter([np.ones((4, 2))]), iter([np.ones((4, 3))]), block_rows=2))
