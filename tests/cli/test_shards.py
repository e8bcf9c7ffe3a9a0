"""Sharded operands through the CLI and klcli.run: the report over shards is the report over the joined file,
and every named row also names its shard (argmax_shard/argmax_row_in_shard, worst[].shard/row_in_shard)."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

import klcli

special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _where(sizes: list[int], paths: list[str], row: int) -> tuple[str, int]:
    """Which shard holds global ``row``, from the shard sizes alone (an independent re-derivation)."""
    ends = np.cumsum(sizes).tolist()
    index = bisect.bisect_right(ends, row)
    return paths[index], row - ([0] + ends)[index]


def _npy_shards(folder, values, sizes, name="part-{}.npy") -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for index, piece in enumerate(np.split(values, np.cumsum(sizes)[:-1])):
        path = folder / name.format(index)
        np.save(path, piece)
        paths.append(str(path))
    return paths


def _parquet_shards(folder, values, sizes) -> list[str]:
    folder.mkdir()
    paths = []
    for index, piece in enumerate(np.split(values, np.cumsum(sizes)[:-1])):
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(pa.table({"v": pa.array(piece.tolist(), type=pa.list_(pa.float64()))}), path)
        paths.append(str(path))
    (folder / "_SUCCESS").write_bytes(b"")
    return paths


def _safetensors_shards(folder, values, sizes) -> list[str]:
    from tests.io.test_llm_formats import write_safetensors

    folder.mkdir()
    paths = []
    for index, piece in enumerate(np.split(values, np.cumsum(sizes)[:-1])):
        path = folder / f"shard-{index}.safetensors"
        write_safetensors(path, {"logits": piece})
        paths.append(str(path))
    return paths


def _without_inputs(doc: dict) -> dict:
    """The report but the input descriptions (which name the operands), the shard names and compare's candidate
    names (from the TEST operands' file names)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in ("inputs", "argmax_shard", "argmax_row_in_shard", "shard", "row_in_shard", "name",
                                 "names")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(doc)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(16)
    p, q = rng.normal(size=(13, 6)), rng.normal(size=(13, 6)) * 2
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    return p, q, tmp_path


def test_kl_over_shards_equals_kl_over_the_joined_file(cli, pair):
    p, q, folder = pair
    p_sizes, q_sizes = [1, 5, 1, 6], [7, 6]  # uneven, shards of one row, P and Q cut differently
    p_paths = _npy_shards(folder / "p", p, p_sizes)
    _npy_shards(folder / "q", q, q_sizes)
    sharded = cli("kl", f"{folder}/p/part-*.npy", folder / "q", "--logits", "--json", "--per-row")
    joined = cli("kl", folder / "p.npy", folder / "q.npy", "--logits", "--json", "--per-row")
    assert sharded.code == joined.code == 0, sharded.err
    doc = sharded.json()
    assert _without_inputs(doc) == _without_inputs(joined.json())
    reference = scipy_stats.entropy(special.softmax(p, axis=1), special.softmax(q, axis=1), axis=1)
    assert doc["value"] == pytest.approx(reference.mean(), rel=1e-12)
    argmax = int(np.argmax(reference))
    assert doc["summary"]["argmax"] == argmax
    assert (doc["summary"]["argmax_shard"], doc["summary"]["argmax_row_in_shard"]) == \
        _where(p_sizes, p_paths, argmax)
    assert [entry["shards"] for entry in doc["inputs"]] == [4, 2]
    assert list(doc["summary"])[-3:] == ["argmax", "argmax_shard", "argmax_row_in_shard"]


def test_q_shards_name_the_row_when_p_is_one_file(cli, pair):
    p, q, folder = pair
    q_sizes = [2, 2, 9]
    q_paths = _npy_shards(folder / "q", q, q_sizes)
    doc = cli("kl", folder / "p.npy", folder / "q", "--logits", "--json").json()
    assert (doc["summary"]["argmax_shard"], doc["summary"]["argmax_row_in_shard"]) == \
        _where(q_sizes, q_paths, doc["summary"]["argmax"])


def test_natural_order_not_lexical(cli, tmp_path):
    """Twelve one-row shards part-0 … part-11: read lexically (part-10 after part-1) P's rows would meet the
    wrong rows of Q and give another figure."""
    rng = np.random.default_rng(5)
    p, q = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    paths = _npy_shards(tmp_path / "p", p, [1] * 12)
    np.save(tmp_path / "q.npy", q)
    doc = cli("kl", f"{tmp_path}/p/part-*.npy", tmp_path / "q.npy", "--logits", "--json", "--per-row").json()
    reference = scipy_stats.entropy(special.softmax(p, axis=1), special.softmax(q, axis=1), axis=1)
    lexical = [int(path.rsplit("-", 1)[1].split(".")[0]) for path in sorted(paths)]
    wrong = scipy_stats.entropy(special.softmax(p[lexical], axis=1), special.softmax(q, axis=1), axis=1)
    assert not np.allclose(wrong, reference)
    assert np.allclose(doc["per_row"]["kl"], reference, rtol=1e-12)
    argmax = int(np.argmax(reference))
    assert doc["summary"]["argmax_shard"] == paths[argmax] and doc["summary"]["argmax_row_in_shard"] == 0


def test_compare_with_sharded_labels(cli, tmp_path):
    rng = np.random.default_rng(8)
    base, test = rng.normal(size=(17, 9)), rng.normal(size=(17, 9))
    labels = rng.integers(0, 9, size=17)
    labels[[2, 11]] = -100  # ignored positions
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "test.npy", test)
    np.save(tmp_path / "labels.npy", labels)
    base_sizes = [5, 1, 11]
    base_paths = _parquet_shards(tmp_path / "base", base, base_sizes)  # a Parquet dataset directory
    _safetensors_shards(tmp_path / "test", test, [9, 8])
    _npy_shards(tmp_path / "labels", labels, [3, 3, 3, 8], name="ids-{}.npy")
    sharded = cli("compare", tmp_path / "base", f"{tmp_path}/test/*.safetensors:logits", "--labels",
                  tmp_path / "labels", "--worst", "4", "--json")
    joined = cli("compare", tmp_path / "base.npy", tmp_path / "test.npy", "--labels", tmp_path / "labels.npy",
                 "--worst", "4", "--json")
    assert sharded.code == 0, sharded.err
    doc = sharded.json()
    assert _without_inputs(doc) == _without_inputs(joined.json())
    kept = labels != -100
    kl = scipy_stats.entropy(special.softmax(base, axis=1), special.softmax(test, axis=1), axis=1)
    kl_kept = np.where(kept, kl, -np.inf)
    assert doc["summary"]["argmax"] == int(np.argmax(kl_kept))
    for summary in [doc["summary"], doc["kl_reverse"], doc["js"], doc["tv"], doc["delta_p"]]:
        assert (summary["argmax_shard"], summary["argmax_row_in_shard"]) == \
            _where(base_sizes, base_paths, summary["argmax"])
    worst = np.argsort(-kl_kept, kind="stable")[:4]
    assert [entry["row"] for entry in doc["worst"]] == worst.tolist()
    for entry in doc["worst"]:
        assert (entry["shard"], entry["row_in_shard"]) == _where(base_sizes, base_paths, entry["row"])


def test_compare_names_test_shards_when_base_is_one_file(cli, tmp_path):
    rng = np.random.default_rng(9)
    base, test = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    np.save(tmp_path / "base.npy", base)
    test_paths = _npy_shards(tmp_path / "test", test, [4, 2])
    doc = cli("compare", tmp_path / "base.npy", tmp_path / "test", "--json").json()
    for entry in doc["worst"]:
        assert (entry["shard"], entry["row_in_shard"]) == _where([4, 2], test_paths, entry["row"])


def test_perplexity_over_batch_shards(cli, tmp_path):
    """(B, T, V) logits in shards of whole sequences, labels cut elsewhere: argmax is the flat position, and
    argmax_row_in_shard the flat row within the logits' shard."""
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(5, 4, 7))
    labels = rng.integers(0, 7, size=(5, 4))
    labels[1, 3] = -100
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    batch_sizes = [2, 1, 2]
    paths = _npy_shards(tmp_path / "logits", logits, batch_sizes)
    _npy_shards(tmp_path / "labels", labels, [4, 1], name="y-{}.npy")
    sharded = cli("perplexity", tmp_path / "logits", "--labels", f"{tmp_path}/labels/y-*.npy", "--json",
                  "--per-row")
    joined = cli("perplexity", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--json", "--per-row")
    assert sharded.code == 0, sharded.err
    doc = sharded.json()
    assert _without_inputs(doc) == _without_inputs(joined.json())
    flat_logits, flat_labels = logits.reshape(-1, 7), labels.reshape(-1)
    counted = flat_labels != -100
    loss = -special.log_softmax(flat_logits, axis=1)[np.arange(20), np.where(counted, flat_labels, 0)]
    assert doc["perplexity"] == pytest.approx(np.exp(loss[counted].mean()), rel=1e-12)
    argmax = int(np.argmax(np.where(counted, loss, -np.inf)))
    assert doc["summary"]["argmax"] == argmax
    assert (doc["summary"]["argmax_shard"], doc["summary"]["argmax_row_in_shard"]) == \
        _where([size * 4 for size in batch_sizes], paths, argmax)


def test_perplexity_names_label_shards_when_the_logits_are_one_file(cli, tmp_path):
    rng = np.random.default_rng(12)
    logits, labels = rng.normal(size=(9, 5)), rng.integers(0, 5, size=9)
    np.save(tmp_path / "logits.npy", logits)
    paths = _npy_shards(tmp_path / "labels", labels, [2, 7])
    doc = cli("perplexity", tmp_path / "logits.npy", "--labels", tmp_path / "labels", "--json").json()
    assert (doc["summary"]["argmax_shard"], doc["summary"]["argmax_row_in_shard"]) == \
        _where([2, 7], paths, doc["summary"]["argmax"])


def test_the_table_shows_the_shard_beside_argmax(cli, pair):
    p, q, folder = pair
    _npy_shards(folder / "p", p, [3, 10])
    doc = cli("kl", folder / "p", folder / "q.npy", "--logits", "--json").json()
    table = cli("kl", folder / "p", folder / "q.npy", "--logits").out
    summary = doc["summary"]
    shard = summary["argmax_shard"].rsplit("/", 1)[1]
    lines = {line.split()[0] + (" " + line.split()[1] if line.startswith((" argmax shard", " shard row")) else ""):
             line.split()[-1] for line in table.splitlines() if line.strip()}
    assert (lines["argmax"], lines["argmax shard"], lines["shard row"]) == \
        (str(summary["argmax"]), shard, str(summary["argmax_row_in_shard"]))


def test_the_worst_table_names_each_shard(cli, tmp_path):
    rng = np.random.default_rng(15)
    base, test = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    _npy_shards(tmp_path / "base", base, [2, 4])
    np.save(tmp_path / "test.npy", test)
    doc = cli("compare", tmp_path / "base", tmp_path / "test.npy", "--worst", "3", "--json").json()
    table = cli("compare", tmp_path / "base", tmp_path / "test.npy", "--worst", "3").out
    lines = table.splitlines()
    listed = lines[[line.strip() for line in lines].index("worst"):]
    header = listed[2].split()
    assert header[-2:] == ["shard", "row_in_shard"]
    cells = [line.split() for line in listed[4:7]]
    assert [(int(c[0]), c[-2], int(c[-1])) for c in cells] == \
        [(e["row"], e["shard"].rsplit("/", 1)[1], e["row_in_shard"]) for e in doc["worst"]]


def test_the_api_runs_on_a_glob(pair):
    p, q, folder = pair
    _npy_shards(folder / "p", p, [6, 7])
    doc = klcli.run("kl", f"{folder}/p/part-*.npy", str(folder / "q.npy"), logits=True)
    assert doc["value"] == klcli.run("kl", str(folder / "p.npy"), str(folder / "q.npy"), logits=True)["value"]
    assert doc["summary"]["argmax_shard"].startswith(f"{folder}/p/part-")


def test_rlhf_over_sharded_sequences(cli, tmp_path):
    rng = np.random.default_rng(13)
    policy = np.log(rng.uniform(0.05, 1, size=(6, 4)))
    ref = np.log(rng.uniform(0.05, 1, size=(6, 4)))
    np.save(tmp_path / "policy.npy", policy)
    np.save(tmp_path / "ref.npy", ref)
    paths = _npy_shards(tmp_path / "policy", policy, [1, 5])
    _npy_shards(tmp_path / "ref", ref, [3, 3])
    sharded = cli("rlhf", tmp_path / "policy", tmp_path / "ref", "--json").json()
    joined = cli("rlhf", tmp_path / "policy.npy", tmp_path / "ref.npy", "--json").json()
    assert _without_inputs(sharded) == _without_inputs(joined)
    assert (sharded["summary"]["argmax_shard"], sharded["summary"]["argmax_row_in_shard"]) == \
        _where([1, 5], paths, sharded["summary"]["argmax"])


# --- errors: exit 2, one line naming the problem -------------------------------------------------------------------


def test_mismatched_totals_name_both_counts(cli, pair):
    p, q, folder = pair
    _npy_shards(folder / "p", p[:12], [5, 7])
    run = cli("kl", folder / "p", folder / "q.npy", "--logits")
    assert run.code == 2
    assert run.err == (f"klcli: error: P ({folder / 'p'}) has 12 rows but Q ({folder / 'q.npy'}) has 13; they must "
                       "have the same rows, or one of them a single row to compare against every row\n")


def test_mismatched_label_totals_name_both_counts(cli, tmp_path):
    rng = np.random.default_rng(14)
    np.save(tmp_path / "logits.npy", rng.normal(size=(9, 5)))
    _npy_shards(tmp_path / "labels", rng.integers(0, 5, size=8), [2, 6])
    run = cli("compare", tmp_path / "logits.npy", tmp_path / "logits.npy", "--labels", tmp_path / "labels")
    assert run.code == 2
    assert run.err == (f"klcli: error: labels ({tmp_path / 'labels'}) hold 8 labels but BASE "
                       f"({tmp_path / 'logits.npy'}) has 9 positions; give one label per position\n")


def test_a_glob_matching_nothing(cli, pair):
    _, _, folder = pair
    run = cli("kl", f"{folder}/nothing-*.npy", folder / "q.npy", "--logits")
    assert run.code == 2
    assert run.err.startswith(f"klcli: error: {folder}/nothing-*.npy: the pattern matches no file")


def test_a_bad_shard_is_named(cli, pair):
    p, _, folder = pair
    _npy_shards(folder / "p", p, [4, 9])
    (folder / "p" / "part-1.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    run = cli("kl", folder / "p", folder / "q.npy", "--logits")
    assert run.code == 2 and run.err.startswith(f"klcli: error: {folder / 'p' / 'part-1.npy'}: not a valid .npy")


def test_output_onto_a_shard_is_refused(cli, pair):
    p, _, folder = pair
    _npy_shards(folder / "p", p, [4, 9])
    run = cli("kl", f"{folder}/p/*.npy", folder / "q.npy", "--logits", "-o", folder / "p" / "part-1.npy")
    assert run.code == 2 and "is one of the inputs" in run.err


@pytest.mark.parametrize("fmt", ["csv", "feather"])
def test_text_and_arrow_table_shards(cli, pair, fmt):
    """CSV shards' lengths are known only once read: the shard is still named."""
    from tests.conftest import write_table

    p, q, folder = pair
    (folder / "p").mkdir()
    sizes = [4, 1, 8]
    paths = [write_table(folder / "p" / f"part-{i}", piece, fmt)
             for i, piece in enumerate(np.split(p, np.cumsum(sizes)[:-1]))]
    doc = cli("kl", folder / "p", folder / "q.npy", "--logits", "--json").json()
    joined = cli("kl", folder / "p.npy", folder / "q.npy", "--logits", "--json").json()
    assert _without_inputs(doc) == _without_inputs(joined)
    assert doc["inputs"][0]["shape"] == [13, 6]
    assert (doc["summary"]["argmax_shard"], doc["summary"]["argmax_row_in_shard"]) == \
        _where(sizes, paths, doc["summary"]["argmax"])


def test_xent_labels_and_a_sharded_mask(cli, tmp_path):
    rng = np.random.default_rng(17)
    logits, labels = rng.normal(size=(10, 4)), rng.integers(0, 4, size=10)
    mask = (rng.uniform(size=10) > 0.3).astype(np.int8)
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "mask.npy", mask)
    _npy_shards(tmp_path / "labels", labels, [5, 5])
    _npy_shards(tmp_path / "mask", mask, [1, 9])
    sharded = cli("xent", tmp_path / "logits.npy", "--labels", tmp_path / "labels", "--json").json()
    joined = cli("xent", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--json").json()
    assert _without_inputs(sharded) == _without_inputs(joined)
    args = ("compare", tmp_path / "logits.npy", tmp_path / "logits.npy", "--labels")
    sharded = cli(*args, tmp_path / "labels", "--mask", tmp_path / "mask", "--json").json()
    joined = cli(*args, tmp_path / "labels.npy", "--mask", tmp_path / "mask.npy", "--json").json()
    assert _without_inputs(sharded) == _without_inputs(joined)


def test_one_dimensional_shards_are_no_rows_of_distributions(cli, tmp_path):
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "a.npy", np.array([0.5, 0.5]))
    np.save(tmp_path / "p" / "b.npy", np.array([0.2, 0.3, 0.5]))
    run = cli("kl", tmp_path / "p", "0.5,0.5")
    assert run.code == 2
    assert run.err == (f"klcli: error: P ({tmp_path / 'p'}): row 1 has 3 outcomes but the rows before it have 2; "
                       "every row needs the same outcomes (1-D shards are one vector, not rows: give 2-D shards)\n")


@pytest.mark.slow
def test_every_route_names_the_argmax_shard_as_one_run_does(tmp_path, cli):
    """--jobs 2 and --partial/--piece with klcli merge name the max row's shard exactly as one process does."""
    import json

    rng = np.random.default_rng(11)
    sizes = [5, 1, 17, 9]
    p, q = rng.normal(size=(32, 40)), rng.normal(size=(32, 40))
    paths = _npy_shards(tmp_path / "ps", p, sizes)
    np.save(tmp_path / "q.npy", q)
    pattern, other = str(tmp_path / "ps" / "part-*.npy"), str(tmp_path / "q.npy")
    kl_rows = np.sum(special.softmax(p, axis=1) * (special.log_softmax(p, axis=1) - special.log_softmax(q, axis=1)),
                     axis=1)
    shard, row_in_shard = _where(sizes, paths, int(np.argmax(kl_rows)))
    single = json.loads(cli("kl", pattern, other, "--logits", "--json").out)["summary"]
    jobs = json.loads(cli("kl", pattern, other, "--logits", "--json", "--jobs", "2").out)["summary"]
    for index in (1, 2):
        assert cli("kl", pattern, other, "--logits", "--partial", tmp_path / f"{index}.part",
                   "--piece", f"{index}/2").code == 0
    merged = json.loads(cli("merge", tmp_path / "2.part", tmp_path / "1.part", "--json").out)["summary"]
    for summary in (single, jobs, merged):
        assert (summary["argmax"], summary["argmax_shard"], summary["argmax_row_in_shard"]) == \
            (int(np.argmax(kl_rows)), shard, row_in_shard)


def test_each_candidate_is_named_by_its_own_shards(tmp_path, cli):
    """compare BASE T1 T2 T3: BASE whole, T1 and T2 cut differently, T3 whole — each candidate's argmax and worst
    rows name its own shards (never another candidate's), and the unsharded one's name none."""
    import json

    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 30))
    tests = [base + rng.normal(scale=s, size=base.shape) for s in (0.3, 0.6, 0.9)]
    np.save(tmp_path / "base.npy", base)
    sizes = {0: [7, 13, 20], 1: [25, 15]}
    paths = {i: _npy_shards(tmp_path / f"t{i}", tests[i], sizes[i]) for i in sizes}
    np.save(tmp_path / "t2.npy", tests[2])
    operands = [str(tmp_path / "t0" / "part-*.npy"), str(tmp_path / "t1" / "part-*.npy"), str(tmp_path / "t2.npy")]
    doc = json.loads(cli("compare", tmp_path / "base.npy", *operands, "--kind", "logits", "--json",
                         "--worst", "4").out)
    log_base = special.log_softmax(base, axis=1)
    for index, entry in enumerate(doc["tests"]):
        kl = np.sum(np.exp(log_base) * (log_base - special.log_softmax(tests[index], axis=1)), axis=1)
        assert entry["kl"]["argmax"] == int(np.argmax(kl))
        for named in [entry["kl"], *entry["worst"]]:
            row = named.get("argmax", named.get("row"))
            shard = named.get("argmax_shard", named.get("shard"))
            in_shard = named.get("argmax_row_in_shard", named.get("row_in_shard"))
            if index in sizes:
                assert (shard, in_shard) == _where(sizes[index], paths[index], row)
            else:
                assert shard is None and in_shard is None
