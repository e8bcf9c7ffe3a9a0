"""Scaling out (SPEC §6): --partial + klcli merge, --jobs and --engine dask give the report one process prints.

Every route merges the same exact partials, so the documents are compared whole (per-row values included):
counts, extrema, argmax, percentiles and means are the same numbers. One test also holds the merged
figure to an independent reference (scipy).
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest

from tests.conftest import write_table
from tests.io.test_llm_formats import write_safetensors

special = pytest.importorskip("scipy.special")

ROWS, VOCAB, SEQ = 12, 9, 4  # 3 sequences of 4 positions


def _logits(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=shape)


def _write(tmp_path, name: str, values: np.ndarray, fmt: str) -> str:
    """Logits in ``fmt``: (B, T, V) for .npy and safetensors, rows × V for Parquet (row groups of 7)."""
    if fmt == "safetensors":
        return write_safetensors(tmp_path / f"{name}.safetensors", {"logits": values.astype(np.float32)})
    if fmt == "parquet":
        return write_table(tmp_path / name, values.reshape(-1, values.shape[-1]), "parquet")
    path = tmp_path / f"{name}.npy"
    np.save(path, values.astype(np.float32))
    return str(path)


@pytest.fixture
def inputs(tmp_path):
    base = _logits(1, (ROWS // SEQ, SEQ, VOCAB))
    test = base + _logits(2, base.shape) * 0.3
    labels = np.random.default_rng(3).integers(0, VOCAB, size=(ROWS // SEQ, SEQ))
    labels[0, 1] = labels[2, 3] = -100
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "labels-flat.npy", labels.reshape(-1))  # for rows × V Parquet logits
    mask = np.ones(labels.shape, dtype=np.int8)
    mask[1, 2] = 0
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "mask-flat.npy", mask.reshape(-1))
    return tmp_path, base, test, str(tmp_path / "labels.npy")


def _commands(tmp_path, base, test, labels, fmt):
    b, t = _write(tmp_path, f"base-{fmt}", base, fmt), _write(tmp_path, f"test-{fmt}", test, fmt)
    if fmt == "parquet":
        labels = labels.replace("labels.npy", "labels-flat.npy")
    mask = str(tmp_path / ("mask-flat.npy" if fmt == "parquet" else "mask.npy"))
    return {
        "kl": ["kl", b, t, "--logits"],
        "compare-shift-mask": ["compare", b, t, "--labels", labels, "--shift", "--mask", mask],
        "perplexity-shift": ["perplexity", b, "--labels", labels, "--shift"],
        "compare": ["compare", b, t, "--labels", labels, "--top-k", "3"],
        "perplexity": ["perplexity", b, "--labels", labels],
    }


def _pieces_via_merge(cli, tmp_path, args, count: int, *extra) -> dict:
    parts = []
    for k in range(1, count + 1):
        part = tmp_path / f"part-{k}.klp"
        run = cli(*args, "--partial", str(part), "--piece", f"{k}/{count}")  # (a string, as the shell gives it)
        assert (run.code, run.out, run.err) == (0, "", "")
        parts.append(str(part))
    random.Random(count).shuffle(parts)  # any order
    run = cli("merge", *parts, "--json", "--per-row", *extra)
    assert run.code == 0, run.err
    for part in parts:
        (tmp_path / part).unlink()
    return run.json()


@pytest.mark.parametrize("fmt", ["npy", "parquet", "safetensors"])
@pytest.mark.parametrize("command", ["kl", "compare", "perplexity", "compare-shift-mask", "perplexity-shift"])
def test_partials_merge_into_the_single_run_report(cli, inputs, fmt, command):
    tmp_path, base, test, labels = inputs
    args = _commands(tmp_path, base, test, labels, fmt)[command]
    single = cli(*args, "--json", "--per-row")
    assert single.code == 0, single.err
    # Uneven pieces (3 sequences in 2), one sequence each, and (kl: rows of one) one piece of everything.
    counts = [1, 2, 3] + ([ROWS] if command == "kl" else [])
    if "shift" in command and fmt == "parquet":  # one sequence (N, V): its shifted labels are not cut
        counts = [1]
        run = cli(*args, "--partial", str(tmp_path / "x.klp"), "--piece", "1/2")
        _one_line_error(run, "cannot be cut into pieces", "--shift over one sequence")
    for count in counts:
        assert _pieces_via_merge(cli, tmp_path, args, count) == single.json(), (command, fmt, count)


def test_merged_kl_against_scipy(cli, inputs):
    tmp_path, base, test, labels = inputs
    args = _commands(tmp_path, base, test, labels, "npy")["kl"]
    merged = _pieces_via_merge(cli, tmp_path, args, 5, "--base", "2")
    p = special.softmax(base.astype(np.float32).astype(np.float64).reshape(-1, VOCAB), axis=1)
    q = special.softmax(test.astype(np.float32).astype(np.float64).reshape(-1, VOCAB), axis=1)
    reference = special.rel_entr(p, q).sum(axis=1) / np.log(2)
    assert merged["unit"] == "bits"
    assert merged["value"] == pytest.approx(reference.mean(), rel=1e-12)
    assert merged["summary"]["argmax"] == int(np.argmax(reference))
    assert merged["summary"]["max"] == pytest.approx(reference.max(), rel=1e-12)


def test_merge_is_associative_over_random_groupings(inputs):
    from klcli.pieces import merge_pieces
    from klcli.runner import plan

    tmp_path, base, test, labels = inputs
    _, b, t, *_ = _commands(tmp_path, base, test, labels, "npy")["compare"]
    planned = plan("compare", b, t, labels=labels, top_k=3)
    pieces = [planned.split.map((row, row + SEQ), None) for row in range(0, ROWS, SEQ)]
    reference = planned.split.finish(merge_pieces(pieces)).document(per_row=True)
    rng = random.Random(7)
    for _ in range(10):
        shuffled = pieces[:]
        rng.shuffle(shuffled)
        cut = rng.randint(1, len(shuffled) - 1)
        left, right = sorted(shuffled[:cut], key=lambda p: p.partial.start), shuffled[cut:]
        groups = []
        for side in (left, right):  # merge whatever consecutive runs each side holds, then everything
            side = sorted(side, key=lambda p: p.partial.start)
            run = [side[0]]
            for piece in side[1:]:
                if piece.partial.start == run[-1].partial.stop:
                    run.append(piece)
                else:
                    groups.append(merge_pieces(run))
                    run = [piece]
            groups.append(merge_pieces(run))
        rng.shuffle(groups)
        merged = planned.split.finish(merge_pieces(groups)).document(per_row=True)
        assert json.dumps(merged, sort_keys=True) == json.dumps(reference, sort_keys=True)


# --- what merge refuses -------------------------------------------------------------------------------------------


@pytest.fixture
def parts(cli, inputs):
    tmp_path, base, test, labels = inputs
    commands = _commands(tmp_path, base, test, labels, "npy")
    made = {}
    for name, args, piece in [("kl1", commands["kl"], "1/3"), ("kl2", commands["kl"], "2/3"),
                              ("kl3", commands["kl"], "3/3"), ("half1", commands["kl"], "1/2"),
                              ("warm2", commands["kl"] + ["--temperature", "2"], "2/3"),
                              ("probs2", commands["kl"][:-1] + ["--p-kind", "logits", "--q-kind", "logits"], "2/3"),
                              ("cmp2", commands["compare"], "2/3"), ("top2", commands["compare"][:-1] + ["4"], "3/3"),
                              ("cmp1", commands["compare"], "1/3"), ("cmp3", commands["compare"], "3/3")]:
        path = tmp_path / f"{name}.klp"
        assert cli(*args, "--partial", path, "--piece", piece).code == 0
        made[name] = str(path)
    return tmp_path, made


def _one_line_error(run, *fragments):
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("klcli: error: ") and run.err.count("\n") == 1, run.err
    for fragment in fragments:
        assert fragment in run.err, run.err


def test_merge_refuses_mismatched_partials(cli, parts):
    tmp_path, p = parts
    _one_line_error(cli("merge", p["kl1"], p["cmp2"], p["kl3"]), "klcli compare", "only partials of one command")
    _one_line_error(cli("merge", p["kl1"], p["warm2"], p["kl3"]), "--temperature 2.0")
    _one_line_error(cli("merge", p["kl1"], p["probs2"], p["kl3"]), "--logits False")
    _one_line_error(cli("merge", p["cmp1"], p["cmp2"], p["top2"]), "--top-k 4")
    _one_line_error(cli("merge", p["kl1"], p["kl3"]), "rows 4–8 are in no partial")
    _one_line_error(cli("merge", p["kl1"], p["kl2"]), "rows 8–12 are in no partial")
    _one_line_error(cli("merge", p["half1"], p["kl2"], p["kl3"]), "overlaps")
    _one_line_error(cli("merge", str(tmp_path / "none-*.klp")), "matches no file")


def test_merge_refuses_damaged_and_foreign_files(cli, parts):
    tmp_path, p = parts
    data = open(p["kl2"], "rb").read()
    (tmp_path / "cut.klp").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) - 40] ^= 0x10
    (tmp_path / "flip.klp").write_bytes(bytes(flipped))
    (tmp_path / "empty.klp").write_bytes(b"")
    for name in ("cut.klp", "flip.klp"):
        _one_line_error(cli("merge", p["kl1"], tmp_path / name, p["kl3"]), name, "checksum does not match")
    for name in ("empty.klp",):
        _one_line_error(cli("merge", tmp_path / name), "not a klcli partial file")
    _one_line_error(cli("merge", tmp_path / "base-npy.npy"), "not a klcli partial file")
    # A newer format version, checksum intact, is named as such.
    from klcli.io.partial_file import MAGIC, decode

    length = struct.unpack("<Q", data[8:16])[0]
    header = json.loads(data[16 : 16 + length])
    header["version"] = 99
    text = json.dumps(header).encode()
    import hashlib

    body = MAGIC + struct.pack("<Q", len(text)) + text + data[16 + length : -32]
    (tmp_path / "v99.klp").write_bytes(body + hashlib.sha256(body).digest())
    _one_line_error(cli("merge", tmp_path / "v99.klp"), "format version 99")
    with pytest.raises(Exception, match="not a klcli partial"):
        decode(b"PK\x03\x04", "zip")


def test_a_failed_partial_leaves_nothing_behind(cli, inputs):
    tmp_path, base, test, labels = inputs
    bad = base.copy()
    bad[2, 1, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad.astype(np.float32))
    run = cli("kl", tmp_path / "bad.npy", _write(tmp_path, "test-npy", test, "npy"), "--logits",
              "--partial", tmp_path / "out.klp", "--piece", "3/3")
    _one_line_error(run, "bad.npy", "row 9")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".klcli-")]
    assert not (tmp_path / "out.klp").exists()


def test_piece_and_partial_usage_errors(cli, inputs):
    tmp_path, base, test, labels = inputs
    args = _commands(tmp_path, base, test, labels, "npy")["compare"]
    _one_line_error(cli(*args, "--piece", "1/2"), "--piece K/N goes with --partial FILE")
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--piece", "4/3"), "K must be between 1 and N")
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--piece", "1/4"), "only 3 sequences")
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--piece", "a"), "give K/N")
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--check", "kl.mean<1"),
                    "--check goes with klcli merge")
    _one_line_error(cli(*args, "--partial", args[1]), "--partial", "is one of the inputs")
    # The unit and the HTML report belong to the report klcli merge prints: refused here, never silently dropped.
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--bits"), "give --bits or --base to klcli merge")
    _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", "--html", tmp_path / "r.html"),
                    "--html is written from the report")
    for option in (["-o", str(tmp_path / "r.json")], ["-q"], ["--json"], ["--per-row"]):
        _one_line_error(cli(*args, "--partial", tmp_path / "x.klp", *option), "give it to klcli merge")
    assert not (tmp_path / "x.klp").exists() and not (tmp_path / "r.html").exists()


def test_partial_of_arrays_from_python(tmp_path, inputs):
    import klcli

    _, base, test, labels = inputs
    ids = np.load(labels)
    parts = [str(tmp_path / f"a-{k}.klp") for k in (1, 2, 3)]
    for k, part in enumerate(parts, 1):
        klcli.write_partial(part, "compare", base, test, labels=ids, piece=f"{k}/3")
    assert klcli.merge(*parts[::-1], base=2) == klcli.run("compare", base, test, labels=ids, base=2)


def test_engine_dask_without_dask_says_how_to_install(cli, inputs, monkeypatch):
    import sys

    tmp_path, base, test, labels = inputs
    monkeypatch.setitem(sys.modules, "distributed", None)
    args = _commands(tmp_path, base, test, labels, "npy")["kl"]
    _one_line_error(cli(*args, "--engine", "dask", "--scheduler", "local:2"), "pip install 'klcli[dask]'")


def test_the_whole_run_as_one_partial(cli, inputs):
    """--partial without --piece: every row, one file; merging it alone gives the report."""
    tmp_path, base, test, labels = inputs
    args = _commands(tmp_path, base, test, labels, "safetensors")["perplexity"]
    assert cli(*args, "--partial", tmp_path / "all.klp").code == 0
    assert cli("merge", tmp_path / "all.klp", "--json").json() == cli(*args, "--json").json()


# --- other processes (slow: workers start Python) ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npy", "parquet", "safetensors"])
def test_jobs_give_the_single_run_report(cli, inputs, fmt):
    tmp_path, base, test, labels = inputs
    for command, args in _commands(tmp_path, base, test, labels, fmt).items():
        single = cli(*args, "--json", "--per-row")
        for jobs in ("2", "3"):  # 3: one sequence per worker
            run = cli(*args, "--json", "--per-row", "--jobs", jobs)
            assert run.code == 0, run.err
            document = run.json()
            if "shift" in command and fmt == "parquet":  # one sequence: not cut, and said so
                assert document["notes"].pop() == "ran in one process: --shift over one sequence (N, V) reads it whole"
            assert document == single.json(), (command, fmt)


@pytest.mark.slow
def test_jobs_from_python_with_arrays(inputs):
    import klcli

    _, base, test, labels = inputs
    ids = np.load(labels)
    one = klcli.run("compare", base, test, labels=ids, per_row=True)
    assert klcli.run("compare", base, test, labels=ids, per_row=True, jobs=2) == one


@pytest.mark.slow
def test_a_worker_error_is_the_one_line_error(cli, inputs):
    tmp_path, base, test, labels = inputs
    bad = base.copy()
    bad[2, 1, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad.astype(np.float32))
    args = ["kl", tmp_path / "bad.npy", _write(tmp_path, "test-npy", test, "npy"), "--logits"]
    single = cli(*args)
    _one_line_error(single, "bad.npy", "row 9")
    _one_line_error(cli(*args, "--jobs", "2"), single.err.strip()[len("klcli: error: "):], "rows 6–12")


@pytest.mark.slow
def test_dask_local_cluster_gives_the_single_run_report(cli, inputs):
    pytest.importorskip("distributed")
    tmp_path, base, test, labels = inputs
    for command, fmt in (("kl", "npy"), ("compare", "parquet"), ("perplexity", "safetensors")):
        args = _commands(tmp_path, base, test, labels, fmt)[command]
        single = cli(*args, "--json", "--per-row")
        dask = cli(*args, "--json", "--per-row", "--engine", "dask", "--scheduler", "local:2")
        assert dask.code == 0, dask.err
        assert dask.json() == single.json(), (command, fmt)


@pytest.mark.slow
def test_a_dask_worker_raising_is_a_clear_error(cli, inputs):
    pytest.importorskip("distributed")
    tmp_path, base, test, labels = inputs
    bad = base.copy()
    bad[2, 1, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad.astype(np.float32))
    args = ["kl", tmp_path / "bad.npy", _write(tmp_path, "test-npy", test, "npy"), "--logits"]
    _one_line_error(cli(*args, "--engine", "dask", "--scheduler", "local:2"), "bad.npy", "row 9",
                    "in the Dask task of rows")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (forkserver workers are its grandchildren), from /proc."""
    import os

    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="reads /proc")
def test_ctrl_c_stops_the_workers_and_writes_nothing(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during --jobs 2: exit 130, one line,
    no partial file and no temporary file, and no worker left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rows, vocab = 4096, 32000
    block = np.random.default_rng(0).normal(size=(256, vocab)).astype(np.float32)
    for name in ("p", "q"):
        array = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=(rows, vocab))
        for start in range(0, rows, 256):
            array[start : start + 256] = block if name == "p" else block[::-1]
        array.flush()
        del array
    process = subprocess.Popen([sys.executable, "-m", "klcli", "kl", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"),
                                "--logits", "--jobs", "2", "--partial", str(tmp_path / "out.klp")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 3 and process.poll() is None:  # forkserver + 2 workers
        workers = _descendants(process.pid)
        time.sleep(0.05)
    assert process.poll() is None, "finished before it could be interrupted"
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.decode() == "klcli: interrupted\n" and out == b""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.npy", "q.npy"]
    time.sleep(1.0)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}") and
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]


# --- sharded operands: each piece reads only its shards --------------------------------------------------------


def _sharded(tmp_path, name: str, values: np.ndarray, sizes: list[int], fmt: str) -> tuple[str, list[str]]:
    """``values`` cut along the first axis into shards of ``sizes`` in ``fmt``: (the glob, the shard paths)."""
    folder = tmp_path / name
    folder.mkdir()
    paths = []
    for index, piece in enumerate(np.split(values, np.cumsum(sizes)[:-1])):
        if fmt == "labels":
            np.save(folder / f"part-{index}.npy", piece)
            paths.append(str(folder / f"part-{index}.npy"))
        else:
            paths.append(_write(folder, f"part-{index}", piece, fmt))
    return str(folder / "part-*"), paths


@pytest.fixture
def sharded(tmp_path):
    """Base, test and labels of 5 sequences of 4 positions, sharded unevenly (1, 3 and 1 sequences)."""
    base = _logits(4, (5, SEQ, VOCAB))
    test = base + _logits(5, base.shape) * 0.3
    labels = np.random.default_rng(6).integers(0, VOCAB, size=(5, SEQ))
    labels[3, 2] = -100
    return tmp_path, base, test, labels


@pytest.mark.parametrize("fmt", ["npy", "parquet", "safetensors"])
@pytest.mark.parametrize("command", ["kl", "compare", "perplexity"])
def test_pieces_of_sharded_inputs_read_each_row_once_and_merge_to_the_single_report(cli, sharded, shard_reads,
                                                                                      fmt, command):
    tmp_path, base, test, labels = sharded
    if fmt == "parquet":  # rows × V tables: the labels flat beside them
        base, test, labels = base.reshape(-1, VOCAB), test.reshape(-1, VOCAB), labels.reshape(-1)
        sizes = [4, 12, 4]
    else:
        sizes = [1, 3, 1]
    b, b_paths = _sharded(tmp_path, "base", base, sizes, fmt)
    t, t_paths = _sharded(tmp_path, "test", test, [2, 2, 1] if fmt != "parquet" else [8, 8, 4], fmt)
    ids, id_paths = _sharded(tmp_path, "labels", labels, sizes, "labels")
    args = {"kl": ["kl", b, t, "--logits"], "compare": ["compare", b, t, "--labels", ids, "--top-k", "3"],
            "perplexity": ["perplexity", b, "--labels", ids]}[command]
    single = cli(*args, "--json", "--per-row")
    assert single.code == 0, single.err
    document = single.json()
    assert "argmax_shard" in document["summary"]
    for count in (1, 2, 3, 5):
        shard_reads.clear()
        assert _pieces_via_merge(cli, tmp_path, args, count) == document, (command, fmt, count)
        rows_of = {path: int(np.prod(np.load(path).shape)) if "labels" in path else None for path in id_paths}
        for paths, values in ((b_paths, base), (t_paths if command != "perplexity" else [], test)):
            cut = np.cumsum([0] + (sizes if paths is b_paths else [2, 2, 1] if fmt != "parquet" else [8, 8, 4]))
            rows_of.update({path: int(np.prod(values[cut[i]:cut[i + 1]].shape[:-1])) for i, path in enumerate(paths)})
        expected = {path: rows for path, rows in rows_of.items() if command != "kl" or "labels" not in path}
        assert shard_reads == expected, (command, fmt, count)  # every row of every shard read once in all


@pytest.mark.parametrize("command", ["kl", "compare", "perplexity"])
def test_piece_k_of_the_shard_count_is_shard_k_where_it_lies(cli, sharded, shard_reads, command):
    """--piece K/N with N shards: the K-th piece is the K-th shard's rows, and only that shard (and the rows of the
    other operands beside it) is read."""
    from klcli.io.partial_file import read_partial

    tmp_path, base, test, labels = sharded
    sizes = [1, 3, 1]
    b, b_paths = _sharded(tmp_path, "base", base, sizes, "npy")
    ids, id_paths = _sharded(tmp_path, "labels", labels, [2, 3], "labels")  # cut elsewhere: followed, not cutting
    np.save(tmp_path / "test.npy", test.astype(np.float32))
    args = {"kl": ["kl", b, str(tmp_path / "test.npy"), "--logits"],
            "compare": ["compare", b, str(tmp_path / "test.npy"), "--labels", ids],
            "perplexity": ["perplexity", b, "--labels", ids]}[command]
    ends = np.cumsum([0] + sizes) * SEQ
    for k in (1, 2, 3):
        shard_reads.clear()
        part = tmp_path / f"shard-{k}.klp"
        assert cli(*args, "--partial", part, "--piece", f"{k}/3").code == 0
        assert read_partial(str(part))[0]["rows"] == [int(ends[k - 1]), int(ends[k])]
        base_read = {path: rows for path, rows in shard_reads.items() if path in b_paths}
        assert base_read == {b_paths[k - 1]: sizes[k - 1] * SEQ}
    merged = cli("merge", *[tmp_path / f"shard-{k}.klp" for k in (3, 1, 2)], "--json", "--per-row")
    assert merged.json() == cli(*args, "--json", "--per-row").json()


def test_jobs_and_dask_group_whole_shards(sharded):
    from klcli.pieces import pieces_of
    from klcli.runner import plan

    tmp_path, base, test, labels = sharded
    b, _ = _sharded(tmp_path, "base", base, [1, 3, 1], "npy")
    np.save(tmp_path / "test.npy", test)
    split = plan("kl", b, str(tmp_path / "test.npy"), logits=True).split
    assert pieces_of(split, 2)[0] == [(0, 4), (4, 20)]  # shard ends 4, 16, 20: 4 is nearer half of 20 than 16
    assert pieces_of(split, 3)[0] == [(0, 4), (4, 16), (16, 20)]
    unsharded = plan("kl", str(tmp_path / "test.npy"), str(tmp_path / "test.npy"), logits=True).split
    assert pieces_of(unsharded, 2)[0] == [(0, 10), (10, 20)]


@pytest.mark.slow
def test_jobs_and_dask_on_shards_give_the_single_run_report(cli, sharded):
    tmp_path, base, test, labels = sharded
    b, _ = _sharded(tmp_path, "base", base, [1, 3, 1], "npy")
    t, _ = _sharded(tmp_path, "test", test, [2, 2, 1], "safetensors")
    ids, _ = _sharded(tmp_path, "labels", labels, [4, 1], "labels")
    routes = [["--jobs", "2"], ["--jobs", "3"]]
    try:
        import distributed  # noqa: F401

        routes.append(["--engine", "dask", "--scheduler", "local:2"])
    except ImportError:
        pass
    for args in (["kl", b, t, "--logits"], ["compare", b, t, "--labels", ids], ["perplexity", b, "--labels", ids]):
        single = cli(*args, "--json", "--per-row")
        assert single.code == 0 and "argmax_shard" in single.json()["summary"], single.err
        for route in routes:
            run = cli(*args, "--json", "--per-row", *route)
            assert run.code == 0, run.err
            assert run.json() == single.json(), (args[0], route)
