"""compare's where-the-drift-is figures: the KL histogram, KL along the sequence, worst positions as text."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from klcli.core.drift import log_histogram

special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")


def reference_edges(values: np.ndarray) -> np.ndarray:
    """The documented bin rule, written again here: round decades around the positive finite values."""
    positive = values[(values > 0) & np.isfinite(values)]
    lo, hi = math.floor(math.log10(positive.min())), math.ceil(math.log10(positive.max()))
    lo -= 10.0**lo > positive.min()
    hi = max(hi, lo + 1)
    hi += 10.0**hi < positive.max()
    decades = hi - lo
    width = 0.25 if decades <= 3 else 0.5 if decades <= 6 else 1.0 if decades <= 12 else math.ceil(decades / 12)
    bins = round(decades / width) if decades <= 12 else 12
    return np.array([10.0 ** (lo + i * width) for i in range(bins + 1)])


def trimmed(counts: np.ndarray, edges: np.ndarray):
    held = np.flatnonzero(counts)
    return counts[held[0]:held[-1] + 1], edges[held[0]:held[-1] + 2]


@pytest.mark.parametrize("low, high", [(-3, -1), (-7, 0.5), (-12, 1), (-40, 2), (-0.2, 0.1), (-300, 300)])
def test_histogram_counts_equal_numpy_histogram(low, high):
    rng = np.random.default_rng(int(abs(low * 7 + high)))
    values = 10.0 ** rng.uniform(low, high, size=5000)
    values = np.concatenate([values, np.zeros(17), [np.inf] * 3, [10.0**low, 10.0**high]])  # edges hit too
    rng.shuffle(values)
    histogram = log_histogram(values)
    edges = reference_edges(values)
    counts, edges = trimmed(np.histogram(values[(values > 0) & np.isfinite(values)], bins=edges)[0], edges)
    assert histogram["edges"] == edges.tolist()
    assert histogram["counts"] == counts.tolist()
    assert (histogram["zero"], histogram["infinite"]) == (17, 3)
    assert sum(histogram["counts"]) + 20 == values.size


def test_histogram_of_values_on_the_edges_and_of_no_positive_value():
    values = np.array([1e-3, 1e-2, 1e-2, 0.1])  # powers of ten: each opens its bin; the largest closes the last
    edges = reference_edges(values)
    counts, edges = trimmed(np.histogram(values, bins=edges)[0], edges)
    assert log_histogram(values)["counts"] == counts.tolist() and counts[-1] == 1
    assert log_histogram(np.zeros(4)) == {"edges": [], "counts": [], "zero": 4, "infinite": 0}


@pytest.fixture
def sequences(tmp_path):
    """(B, T, V) logits with some ignored labels, and a tokenizer.json naming every id but the last two."""
    rng = np.random.default_rng(9)
    base = rng.normal(0, 2, size=(4, 7, 12))
    test = base + rng.normal(0, 0.7, size=base.shape)
    test[1, 3] = base[1, 3]  # identical distributions: KL exactly 0
    labels = rng.integers(0, 12, size=(4, 7))
    labels[0, 2] = labels[3, 6] = labels[2, 2] = -100
    for name, array in (("base", base), ("test", test), ("labels", labels)):
        np.save(tmp_path / f"{name}.npy", array)
    words = ["Ġthe", "Ċ", "a", "Ġ<b>", "\x1b[31m", "Ã©", "x", "y", "z", "w"]
    document = {"model": {"type": "BPE", "vocab": {word: i for i, word in enumerate(words)}},
                "decoder": {"type": "ByteLevel"}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(document))
    texts = [" the", "\n", "a", " <b>", "\x1b[31m", "é", "x", "y", "z", "w"]
    return base, test, labels, texts, tmp_path


def per_position_kl(base, test):
    p = special.softmax(base.reshape(-1, base.shape[-1]), axis=1)
    q = special.softmax(test.reshape(-1, test.shape[-1]), axis=1)
    return scipy_stats.entropy(p, q, axis=1)


def test_json_holds_histogram_and_kl_by_position(cli, sequences):
    base, test, labels, _, folder = sequences
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
              "--json").json()
    kl = per_position_kl(base, test)
    kept = labels.ravel() != -100
    expected = [kl.reshape(4, 7)[:, t][kept.reshape(4, 7)[:, t]].mean() for t in range(7)]
    assert doc["kl_by_position"] == pytest.approx(expected, rel=1e-9, abs=1e-14)
    kl_kept = kl[kept]
    kl_kept[np.isclose(kl_kept, 0, atol=1e-15)] = 0.0
    histogram = doc["kl_histogram"]
    assert histogram["zero"] == 1 and histogram["infinite"] == 0
    edges = reference_edges(kl_kept)
    counts, edges = trimmed(np.histogram(kl_kept[kl_kept > 0], bins=edges)[0], edges)
    assert histogram["edges"] == edges.tolist() and histogram["counts"] == counts.tolist()
    bits = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
               "--json", "--bits").json()
    assert bits["kl_histogram"]["edges"] == pytest.approx((edges / math.log(2)).tolist(), rel=1e-12)
    assert bits["kl_histogram"]["counts"] == counts.tolist()
    assert bits["kl_by_position"] == pytest.approx((np.array(expected) / math.log(2)).tolist(), rel=1e-9)


def test_two_dimensional_input_has_no_positions(cli, sequences):
    base, test, _, _, folder = sequences
    np.save(folder / "flat_base.npy", base.reshape(-1, 12))
    np.save(folder / "flat_test.npy", test.reshape(-1, 12))
    doc = cli("compare", folder / "flat_base.npy", folder / "flat_test.npy", "--json").json()
    assert doc["kl_by_position"] is None
    assert sum(doc["kl_histogram"]["counts"]) + doc["kl_histogram"]["zero"] == 28


def test_table_shows_the_histogram_in_plain_text_within_80_columns(cli, sequences):
    _, _, _, _, folder = sequences
    args = ("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy")
    doc, out = cli(*args, "--json").json(), cli(*args).out
    assert "\x1b" not in out
    block = out[out.index("KL histogram"):].split("\n\n")[0].splitlines()
    assert block[0] == "KL histogram (nats, 25 positions, log-spaced bins)"
    assert all(len(line) <= 80 for line in block)
    counts = [int(line.rsplit(None, 1)[1]) for line in block[1:]]
    assert counts == [doc["kl_histogram"]["zero"], *doc["kl_histogram"]["counts"]]
    fullest = max(counts)
    for line, count in zip(block[1:], counts):
        bar = line.split("|", 1)[1].rsplit(None, 1)[0].strip() if count else ""
        assert set(bar) <= {"#"} and len(bar) == (max(1, round(40 * count / fullest)) if count else 0)
    edges = doc["kl_histogram"]["edges"]
    assert block[2].strip().startswith(f"[{edges[0]:.3g}, {edges[1]:.3g})")
    assert block[-1].strip().startswith(f"[{edges[-2]:.3g}, {edges[-1]:.3g}]")


def test_worst_positions_with_token_text(cli, sequences):
    base, test, labels, texts, folder = sequences
    run = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
              "--tokenizer", folder / "tokenizer.json", "--json", "--worst", "25")
    doc = run.json()
    flat_base, flat_test = base.reshape(-1, 12), test.reshape(-1, 12)
    missing = set()
    for entry in doc["worst"]:
        row = entry["row"]
        ids = {"base_top1": int(np.argmax(flat_base[row])), "test_top1": int(np.argmax(flat_test[row])),
               "label": int(labels.ravel()[row])}
        for key, token_id in ids.items():
            assert entry[key] == token_id
            expected = texts[token_id] if token_id < len(texts) else None
            assert entry[f"{key}_text"] == expected, (row, key)
            if expected is None:
                missing.add(token_id)
    assert missing  # the fixture's ids 10 and 11 have no text
    note = f"token ids {', '.join(map(str, sorted(missing)))} are not in {folder / 'tokenizer.json'} (10 tokens)"
    assert any(n.startswith(note) for n in doc["notes"])
    without = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
                  "--json").json()
    assert all(not any(k.endswith("_text") for k in entry) for entry in without["worst"])


def test_table_shows_token_text_escaped(cli, sequences):
    _, _, _, _, folder = sequences
    vocab = folder / "vocab.txt"
    vocab.write_text("".join(f"t{i}\x1b]0;x\x07[red]\n" for i in range(12)), encoding="utf-8")
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--vocab", vocab, "--json").json()
    out = cli("compare", folder / "base.npy", folder / "test.npy", "--vocab", vocab).out
    assert "\x1b" not in out and "\x07" not in out
    first = doc["worst"][0]
    expected = f'{first["base_top1"]} "t{first["base_top1"]}\\x1b]0;x\\x07[red]"'
    assert expected in out
    assert re.search(r"^ +" + str(first["row"]) + r" .*" + re.escape(expected), out, re.M)


def test_one_histogram_per_candidate_in_the_table():
    from klcli.render import to_table
    from klcli.result import Result

    def histogram(counts):
        return {"edges": [10.0 ** (-3 + i / 4) for i in range(len(counts) + 1)], "counts": counts, "zero": 1,
                "infinite": 0}

    summary = {"count": 9, "mean": 0.01, "stderr": 0.001, "p99": 0.02, "max": 0.03}

    def candidate(name, counts):  # what the leaderboard reads of each candidate, and its histogram
        return {"name": name, "kl": summary, "js": summary, "tv": summary, "top1_agreement": 0.9,
                "top1_agreement_stderr": 0.01, "kl_histogram": histogram(counts)}

    tests = [candidate("q4\x1b[31m", [3, 5]), candidate("q8", [7, 0, 1])]
    result = Result(command="compare", headline="mean D(base‖test)", value=0.01, rows=9, inputs=[], summary=summary,
                    metrics={"kl": summary}, figures={"kl_histogram": tests[0]["kl_histogram"], "tests": tests})
    out = to_table(result, per_row=False, color=False, width=80)
    assert "KL histogram of q4\\x1b[31m (nats, 9 positions, log-spaced bins)" in out and "\x1b" not in out
    assert "KL histogram of q8 (nats, 9 positions, log-spaced bins)" in out
    assert out.count("KL histogram") == 2
    block = out[out.index("KL histogram of q8"):].split("\n\n")[0].splitlines()
    assert [int(line.rsplit(None, 1)[1]) for line in block[1:]] == [1, 7, 0, 1]


def test_python_api_takes_the_report_options(sequences):
    import klcli
    from klcli.errors import UsageError

    base, test, _, texts, folder = sequences
    report = folder / "api.html"
    doc = klcli.compare(base, test, tokenizer=str(folder / "tokenizer.json"), html=str(report), worst=3)
    first = doc["worst"][0]
    assert first["base_top1_text"] == (texts[first["base_top1"]] if first["base_top1"] < 10 else None)
    assert repr(doc["kl"]["mean"]) in report.read_text()
    with pytest.raises(UsageError, match="give --tokenizer or --vocab, not both"):
        klcli.compare(base, test, tokenizer="a", vocab="b")
