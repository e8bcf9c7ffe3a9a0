"""The engine: partials of any split merge to the same statistics, bit for bit; pairing, order, errors."""

from __future__ import annotations

import numpy as np
import pytest

from klcli import engine
from klcli.core.discrete import kl_rows
from klcli.core.logspace import as_log_rows
from klcli.core.stats import PERCENTILES, summarize
from klcli.errors import RowCountError, ShapeError


def _logits(rows: int, vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((rows, vocab)) * 2
    return p, p + rng.standard_normal((rows, vocab)) * 0.5


def _splits(rows: int, seed: int) -> list[list[int]]:
    """Block sizes: one block, blocks of one row, even blocks, and random uneven blocks."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, rows), size=7, replace=False))
    uneven = np.diff(np.concatenate([[0], cuts, [rows]])).tolist()
    return [[rows], [1] * rows, [rows // 4] * 4 + [rows % 4] * bool(rows % 4), uneven]


def _blocks(values: np.ndarray, sizes: list[int]):
    start = 0
    for size in sizes:
        yield values[start : start + size]
        start += size


def _kl_partial(item) -> engine.Partial:
    start, p_block, q_block = item
    p_rows = as_log_rows(p_block, "logits", label="P", first_row=start)
    q_rows = as_log_rows(q_block, "logits", label="Q", first_row=start)
    kl = kl_rows(p_rows, q_rows)
    return engine.Partial(start, start + kl.size, {"kl": kl}, values={"big": kl[kl > 0.1]},
                          counts={"rows": int(kl.size)})


def _reference():
    p, q = _logits(61, 40, seed=3)
    return p, q, kl_rows(as_log_rows(p, "logits", label="P"), as_log_rows(q, "logits", label="Q"))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("split", range(4))
def test_any_split_and_thread_count_gives_bit_identical_statistics(threads, split):
    p, q, expected = _reference()
    sizes = _splits(p.shape[0], seed=split)[split]
    pairs = engine.paired_blocks(_blocks(p, sizes), _blocks(q, sizes[::-1]), block_rows=int(np.max(sizes)))
    merged = engine.run(pairs, _kl_partial, threads=threads)
    whole = engine.run([(0, p, q)], _kl_partial, threads=1)
    assert (merged.start, merged.stop, merged.counts) == (0, p.shape[0], {"rows": p.shape[0]})
    # Each row's figure depends on its row alone, so the per-row arrays are the same bits whatever the split.
    assert np.array_equal(merged.per_row["kl"], whole.per_row["kl"])
    assert np.array_equal(merged.values["big"], whole.values["big"])
    ours, theirs = summarize(merged.per_row["kl"]), summarize(whole.per_row["kl"])
    for key in ("count", "min", "max", "argmax", *(name for name, _ in PERCENTILES)):
        assert ours[key] == theirs[key], key
    for key in ("mean", "std", "stderr"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-15, abs=0)
    assert ours["mean"] == pytest.approx(float(np.mean(expected)), rel=1e-15)
    assert ours["argmax"] == int(np.argmax(expected))


def test_merge_is_associative_and_takes_partials_in_any_order():
    p, q, _ = _reference()
    parts = [_kl_partial((start, p[start:stop], q[start:stop])) for start, stop in ((0, 10), (10, 11), (11, 61))]
    left = engine.merge([engine.merge(parts[:2]), parts[2]])
    right = engine.merge([parts[0], engine.merge(parts[1:])])
    shuffled = engine.merge(parts[::-1])
    for merged in (right, shuffled):
        assert np.array_equal(merged.per_row["kl"], left.per_row["kl"])
        assert np.array_equal(merged.values["big"], left.values["big"])
        assert merged.counts == left.counts == {"rows": 61}


def test_merge_refuses_gaps_overlaps_and_different_statistics():
    a = engine.Partial(0, 2, {"kl": np.zeros(2)})
    with pytest.raises(ValueError, match="consecutive rows"):
        engine.merge([a, engine.Partial(3, 4, {"kl": np.zeros(1)})])
    with pytest.raises(ValueError, match="consecutive rows"):
        engine.merge([a, engine.Partial(1, 4, {"kl": np.zeros(3)})])
    with pytest.raises(ValueError, match="different statistics"):
        engine.merge([a, engine.Partial(2, 3, {"js": np.zeros(1)})])
    assert engine.merge([]).rows == 0
    empty = engine.Partial(2, 5)  # a block whose rows were all left out keeps no values
    kept = engine.merge([engine.Partial(0, 2, values={"kl": np.ones(2)}), empty,
                         engine.Partial(5, 6, values={"kl": np.zeros(1)})])
    assert kept.values["kl"].tolist() == [1.0, 1.0, 0.0] and kept.rows == 6


def test_ordered_map_keeps_order_and_reports_the_first_error_first():
    def slow_then_fast(item):
        if item == 3:
            raise KeyError(item)
        return item * item

    assert list(engine.ordered_map(lambda x: x + 1, range(50), 2)) == list(range(1, 51))
    results = engine.ordered_map(slow_then_fast, range(10), 2)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(KeyError):
        next(results)


def test_progress_is_reported_in_rows():
    seen = []

    class Progress:
        def update(self, done):
            seen.append(done)

    items = [(start, start + 5) for start in range(0, 20, 5)]
    engine.run(items, lambda item: engine.Partial(*item), threads=2, progress=Progress())
    assert seen == [5, 10, 15, 20]


def test_pairing_broadcasts_a_single_row_and_names_mismatches():
    many, one = np.zeros((7, 3)), np.ones((1, 3))
    pairs = list(engine.paired_blocks(_blocks(many, [2, 5]), iter([one]), block_rows=3))
    assert [(start, p.shape[0], q.shape[0]) for start, p, q in pairs] == [(0, 3, 1), (3, 3, 1), (6, 1, 1)]
    with pytest.raises(ShapeError, match="P has 3 outcomes per row but Q has 2"):
        list(engine.paired_blocks(iter([many]), iter([np.ones((7, 2))]), block_rows=3))
    with pytest.raises(RowCountError, match="P has 7 rows but Q has 6"):
        list(engine.paired_blocks(iter([many]), iter([np.ones((6, 3))]), block_rows=3))


def test_aligned_blocks_recut_any_number_of_streams_and_name_the_short_one():
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(23, width)) for width in (5, 5, 3)]  # widths may differ; the caller checks them
    cuts = [(7, 16, 23), (1, 2, 20, 23), (23,)]
    streams = [[array[a:b] for a, b in zip((0, *cut), cut)] for array, cut in zip(arrays, cuts)]
    starts, pieces = [], [[], [], []]
    for start, blocks in engine.aligned_blocks(streams, block_rows=4, labels=["BASE", "TEST 1", "TEST 2"]):
        assert len({block.shape[0] for block in blocks}) == 1 and blocks[0].shape[0] <= 4
        starts.append(start)
        for piece, block in zip(pieces, blocks):
            piece.append(block)
    assert starts == list(range(0, 23, 4))
    for piece, array in zip(pieces, arrays):
        np.testing.assert_array_equal(np.concatenate(piece), array)
    short = [arrays[0], arrays[1], arrays[2][:20]]
    with pytest.raises(RowCountError, match="^BASE has 23 rows but TEST 2 has 20; they must have the same rows$"):
        list(engine.aligned_blocks([[a] for a in short], block_rows=8, labels=["BASE", "TEST 1", "TEST 2"]))
    with pytest.raises(RowCountError, match="^BASE has 22 rows but TEST 1 has 23; "):
        list(engine.aligned_blocks([[arrays[0][:22]], [arrays[1]]], block_rows=8, labels=["BASE", "TEST 1"]))
    with pytest.raises(ShapeError, match="^TEST 1: holds no rows$"):
        list(engine.aligned_blocks([[arrays[0]], []], block_rows=8, labels=["BASE", "TEST 1"]))
