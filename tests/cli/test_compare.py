"""klcli compare: every statistic against an independent float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SAMPLES

special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")
distance = pytest.importorskip("scipy.spatial.distance")


def _reference(base, test, labels=None, k=5):
    """Every per-position figure, by scipy in float64, written independently of klcli's kernels."""
    p, q = special.softmax(base.astype(np.float64), axis=1), special.softmax(test.astype(np.float64), axis=1)
    out = {
        "kl": scipy_stats.entropy(p, q, axis=1),
        "kl_reverse": scipy_stats.entropy(q, p, axis=1),
        "js": distance.jensenshannon(p, q, axis=1) ** 2,
        "tv": 0.5 * np.abs(p - q).sum(axis=1),
        "agree": np.argmax(base, axis=1) == np.argmax(test, axis=1),
    }
    k = min(k, base.shape[1])
    top = lambda x: [set(np.argsort(-row, kind="stable")[:k]) for row in x]  # noqa: E731
    out["overlap"] = np.array([len(a & b) / k for a, b in zip(top(base), top(test))])
    if labels is not None:
        rows = np.arange(len(labels))
        out["nll_base"] = -np.log(p[rows, labels])
        out["nll_test"] = -np.log(q[rows, labels])
        out["delta_p"] = q[rows, labels] - p[rows, labels]
    return out


@pytest.fixture
def logits(tmp_path):
    rng = np.random.default_rng(21)
    base = rng.normal(0, 2, size=(300, 40))
    test = base + rng.normal(0, 0.5, size=base.shape)
    base[:5, :3] = base.max() + 1  # tied argmax: lowest index wins in both
    test[:5, :3] = test.max() + 1
    labels = rng.integers(0, 40, size=300)
    for name, array in (("base", base), ("test", test), ("labels", labels)):
        np.save(tmp_path / f"{name}.npy", array)
    return base, test, labels, tmp_path


def _summary_ok(summary, values):
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert summary["p99"] == pytest.approx(np.percentile(values, 99), rel=1e-9)
    assert summary["max"] == pytest.approx(values.max(), rel=1e-9)


def test_every_statistic(cli, logits):
    base, test, labels, folder = logits
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
              "--json", "--per-row").json()
    ref = _reference(base, test, labels)
    assert doc["rows"] == 300 and doc["vocab"] == 40 and doc["tokens"] == 300
    assert doc["value"] == pytest.approx(ref["kl"].mean(), rel=1e-9)
    assert doc["kl"]["stderr"] == pytest.approx(np.std(ref["kl"], ddof=1) / math.sqrt(300), rel=1e-9)
    assert doc["kl"]["p0_1"] == pytest.approx(np.percentile(ref["kl"], 0.1), rel=1e-9)
    for key in ("kl", "kl_reverse", "js", "tv"):
        _summary_ok(doc[key], ref[key])
    agreement = ref["agree"].mean()
    assert doc["top1_agreement"] == pytest.approx(agreement, rel=1e-12)
    assert doc["top1_agreement_stderr"] == pytest.approx(math.sqrt(agreement * (1 - agreement) / 299), rel=1e-12)
    assert doc["topk_overlap"] == pytest.approx(ref["overlap"].mean(), rel=1e-12)
    assert doc["ppl_base"] == pytest.approx(math.exp(ref["nll_base"].mean()), rel=1e-9)
    assert doc["ppl_test"] == pytest.approx(math.exp(ref["nll_test"].mean()), rel=1e-9)
    ln_ratio = ref["nll_test"].mean() - ref["nll_base"].mean()
    assert doc["ppl_ratio"] == pytest.approx(math.exp(ln_ratio), rel=1e-9)
    assert doc["ln_ppl_ratio"] == pytest.approx(ln_ratio, rel=1e-9)
    d = ref["nll_test"] - ref["nll_base"]
    assert doc["ln_ppl_ratio_stderr"] == pytest.approx(math.sqrt((np.mean(d**2) - np.mean(d) ** 2) / 299), rel=1e-9)
    assert doc["nll_correlation"] == pytest.approx(np.corrcoef(ref["nll_base"], ref["nll_test"])[0, 1], rel=1e-9)
    _summary_ok(doc["delta_p"], ref["delta_p"])
    assert doc["delta_p"]["rms"] == pytest.approx(np.sqrt(np.mean(ref["delta_p"] ** 2)), rel=1e-9)
    np.testing.assert_allclose(doc["per_row"]["js"], ref["js"], rtol=1e-9, atol=1e-15)
    assert doc["per_row"]["top1_agree"][:5] == [True] * 5  # the ties


def test_worst_ordering(cli, logits):
    base, test, labels, folder = logits
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy", "--worst", "4",
              "--json").json()
    kl = _reference(base, test)["kl"]
    expected = np.argsort(-kl, kind="stable")[:4]
    assert [w["row"] for w in doc["worst"]] == expected.tolist()
    first = doc["worst"][0]
    row = expected[0]
    assert first["kl"] == pytest.approx(kl[row], rel=1e-9)
    assert (first["base_top1"], first["test_top1"], first["label"]) == (
        int(np.argmax(base[row])), int(np.argmax(test[row])), int(labels[row]))


@pytest.mark.parametrize("vocab", [1, 2])
def test_tiny_vocabularies_and_identical_inputs(cli, tmp_path, vocab):
    rng = np.random.default_rng(vocab)
    base = rng.normal(size=(10, vocab))
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "t.npy", base + 0.3)  # a constant shift: the same distributions
    doc = cli("compare", tmp_path / "b.npy", tmp_path / "t.npy", "--json").json()
    assert doc["value"] == pytest.approx(0.0, abs=1e-15)
    assert doc["js"]["max"] == pytest.approx(0.0, abs=1e-15) and doc["tv"]["max"] == pytest.approx(0, abs=1e-15)
    assert doc["top1_agreement"] == 1.0 and doc["topk_overlap"] == 1.0
    if vocab == 2:
        np.save(tmp_path / "t2.npy", base[:, ::-1].copy())
        doc = cli("compare", tmp_path / "b.npy", tmp_path / "t2.npy", "--json").json()
        ref = _reference(base, base[:, ::-1])
        assert doc["value"] == pytest.approx(ref["kl"].mean(), rel=1e-9)


def test_every_check_key_path(cli, logits):
    _, _, _, folder = logits
    args = ["compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy", "-q"]
    for expr in ("kl.mean<10", "kl.p99<10", "top1_agreement>=0.1", "ppl_ratio<=10", "kl_reverse.max<10",
                 "js.p99<1", "tv.mean<1", "delta_p.rms<1", "topk_overlap>0", "nll_correlation>0", "p99<10"):
        assert cli(*args, "--check", expr).code == 0, expr
    failed = cli(*args, "--check", "top1_agreement>=0.999")
    assert failed.code == 1 and "check failed: top1_agreement>=0.999" in failed.err


def test_shapes_and_missing_labels(cli, logits):
    base, _, _, folder = logits
    np.save(folder / "wide.npy", np.zeros((300, 41)))
    np.save(folder / "short.npy", np.zeros((299, 40)))
    wide = cli("compare", folder / "base.npy", folder / "wide.npy")
    assert wide.code == 2
    assert wide.err == (f"klcli: error: BASE ({folder / 'base.npy'}) has shape (300, 40) but TEST "
                        f"({folder / 'wide.npy'}) has shape (300, 41); compare needs the same positions and "
                        "vocabulary (for logits padded past the tokenizer's vocabulary, compare the first 40 outcomes "
                        "with --vocab-size 40)\n")
    short = cli("compare", folder / "base.npy", folder / "short.npy")
    assert short.code == 2 and "has shape (300, 40) but TEST" in short.err and "(299, 40)" in short.err
    missing = cli("compare", folder / "base.npy", folder / "base.npy", "--labels", folder / "nope.npy")
    assert missing.code == 2
    assert missing.err == (f"klcli: error: {folder / 'nope.npy'}: no such file (nor inline numbers such as 0.1,0.9 "
                           "or 0.1,0.9;0.5,0.5)\n")


def test_sample_data(cli):
    doc = cli("compare", SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy", "--json").json()
    teacher, student = np.load(SAMPLES / "teacher_logits.npy"), np.load(SAMPLES / "student_logits.npy")
    assert doc["value"] == pytest.approx(_reference(teacher, student)["kl"].mean(), rel=1e-9)


def test_top_k_matches_a_stable_sort():
    from klcli.core.compare import top_k

    rng = np.random.default_rng(0)
    for _ in range(200):
        values = rng.integers(0, 6, size=(4, int(rng.integers(1, 700)))).astype(np.float32)  # many ties
        k = int(rng.integers(1, 9))
        expected = np.array([np.lexsort((np.arange(values.shape[1]), -row))[:min(k, values.shape[1])]
                             for row in values])
        np.testing.assert_array_equal(top_k(values, k), expected)


# --- padded batches: ignored positions, --mask, --shift, input row numbers -----------------------------------------

B, T, V = 4, 32, 1000
LENGTHS = (32, 25, 18, 29)  # real tokens per sequence; the rest is right padding


@pytest.fixture
def padded(tmp_path):
    """A padded batch as a training loop dumps it: garbage logits (huge random values) and label −100 at padding."""
    rng = np.random.default_rng(14)
    base = rng.normal(0, 2, size=(B, T, V)).astype(np.float32)
    test = (base + rng.normal(0, 0.05, size=base.shape)).astype(np.float32)
    labels = rng.integers(0, V, size=(B, T))
    for b, length in enumerate(LENGTHS):
        labels[b, length:] = -100
        base[b, length:] = (rng.normal(0, 1, size=(T - length, V)) * 1e4).astype(np.float32)
        test[b, length:] = (rng.normal(0, 1, size=(T - length, V)) * 1e4).astype(np.float32)
    for name, array in (("base", base), ("test", test), ("labels", labels),
                        ("mask", (labels != -100).astype(np.int8)), ("bool_mask", labels != -100)):
        np.save(tmp_path / f"{name}.npy", array)
    return base.reshape(B * T, V), test.reshape(B * T, V), labels.reshape(-1), tmp_path


def _numpy_reference(base, test, rows, labels=None, k=5):
    """Every figure over the given input rows only, from scipy's log_softmax and direct formulas."""
    log_p = special.log_softmax(base[rows].astype(np.float64), axis=1)
    log_q = special.log_softmax(test[rows].astype(np.float64), axis=1)
    p, q = np.exp(log_p), np.exp(log_q)
    m = 0.5 * (p + q)
    out = {
        "kl": np.sum(p * (log_p - log_q), axis=1),
        "kl_reverse": np.sum(q * (log_q - log_p), axis=1),
        "js": 0.5 * np.sum(p * np.log(p / m), axis=1) + 0.5 * np.sum(q * np.log(q / m), axis=1),
        "tv": 0.5 * np.abs(p - q).sum(axis=1),
        "agree": base[rows].argmax(axis=1) == test[rows].argmax(axis=1),
        "overlap": np.array([len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / k
                             for a, b in zip(base[rows], test[rows])]),
    }
    if labels is not None:
        at = np.arange(rows.size)
        out["nll_base"], out["nll_test"] = -log_p[at, labels[rows]], -log_q[at, labels[rows]]
        out["delta_p"] = q[at, labels[rows]] - p[at, labels[rows]]
    return out


def _assert_report(doc, ref, rows):
    """Every per-position statistic of ``doc`` over exactly ``rows`` (input row numbers), against ``ref``."""
    n = rows.size
    for key in ("kl", "kl_reverse", "js", "tv"):
        summary, values = doc[key], ref[key]
        assert summary["count"] == n, key
        assert summary["mean"] == pytest.approx(values.mean(), rel=1e-9), key
        assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9), key
        for name, fraction in (("min", 0), ("p1", 1), ("median", 50), ("p99", 99), ("max", 100)):
            assert summary[name] == pytest.approx(np.percentile(values, fraction), rel=1e-9), (key, name)
        assert summary["argmax"] == int(rows[np.argmax(values)]), key  # the row of the input
    assert doc["top1_agreement"] == pytest.approx(ref["agree"].mean(), rel=1e-12)
    agreement = ref["agree"].mean()
    assert doc["top1_agreement_stderr"] == pytest.approx(math.sqrt(agreement * (1 - agreement) / (n - 1)), rel=1e-12)
    assert doc["topk_overlap"] == pytest.approx(ref["overlap"].mean(), rel=1e-12)
    order = np.argsort(-ref["kl"], kind="stable")[:len(doc["worst"])]
    assert [w["row"] for w in doc["worst"]] == rows[order].tolist()
    np.testing.assert_allclose([w["kl"] for w in doc["worst"]], ref["kl"][order], rtol=1e-9)


def test_ignored_labels_leave_every_statistic(cli, padded):
    base, test, labels, folder = padded
    real = np.flatnonzero(labels != -100)
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy", "--json",
              "--per-row").json()
    ref = _numpy_reference(base, test, real, labels)
    assert doc["rows"] == B * T and doc["tokens"] == real.size == sum(LENGTHS)
    assert doc["ignored_positions"] == B * T - real.size
    assert doc["value"] == pytest.approx(ref["kl"].mean(), rel=1e-9) and doc["value"] < 0.01
    _assert_report(doc, ref, real)
    assert all(w["label"] != -100 for w in doc["worst"])
    for side in ("base", "test"):
        assert doc[f"ppl_{side}"] == pytest.approx(math.exp(ref[f"nll_{side}"].mean()), rel=1e-9)
    assert doc["delta_p"]["count"] == real.size
    assert doc["delta_p"]["mean"] == pytest.approx(ref["delta_p"].mean(), rel=1e-9)
    assert doc["delta_p"]["argmax"] == int(real[np.argmax(ref["delta_p"])])
    assert any("left out" in note for note in doc["notes"])
    # per_row keeps the input's rows: null where the position was left out
    kl = doc["per_row"]["kl"]
    assert len(kl) == B * T and all(kl[i] is None for i in np.flatnonzero(labels == -100))
    np.testing.assert_allclose([kl[i] for i in real], ref["kl"], rtol=1e-9)
    assert [doc["per_row"]["top1_agree"][i] for i in real] == ref["agree"].tolist()


@pytest.mark.parametrize("mask", ["mask.npy", "bool_mask.npy"])
def test_mask_selects_positions_without_labels(cli, padded, mask):
    base, test, labels, folder = padded
    real = np.flatnonzero(labels != -100)
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--mask", folder / mask, "--json").json()
    _assert_report(doc, _numpy_reference(base, test, real), real)
    assert "tokens" not in doc and doc["inputs"][2]["kind"] == "mask"


def test_mask_and_labels_combine_by_and(cli, padded):
    base, test, labels, folder = padded
    mask = labels != -100
    mask[::3] = False  # the mask drops further positions; the labels drop the padding
    np.save(folder / "sparse.npy", mask.reshape(B, T))
    kept = np.flatnonzero(mask & (labels != -100))
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy",
              "--mask", folder / "sparse.npy", "--json").json()
    ref = _numpy_reference(base, test, kept, labels)
    _assert_report(doc, ref, kept)
    assert doc["tokens"] == kept.size
    assert doc["ppl_base"] == pytest.approx(math.exp(ref["nll_base"].mean()), rel=1e-9)


def test_shift_scores_position_t_against_label_t_plus_1(cli, padded):
    base, test, labels, folder = padded
    # Hugging Face: logits[:, :-1] against labels[:, 1:]; the last position of each sequence has no label.
    next_label = np.full((B, T), -100)
    next_label[:, :-1] = labels.reshape(B, T)[:, 1:]
    next_label = next_label.reshape(-1)
    kept = np.flatnonzero(next_label != -100)
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy", "--shift",
              "--json").json()
    ref = _numpy_reference(base, test, kept, next_label)
    _assert_report(doc, ref, kept)
    assert doc["tokens"] == kept.size == sum(LENGTHS) - B
    assert doc["ppl_test"] == pytest.approx(math.exp(ref["nll_test"].mean()), rel=1e-9)
    assert {w["label"] for w in doc["worst"]} <= set(next_label[kept].tolist())
    # perplexity --shift scores the same tokens the same way
    ppl = cli("perplexity", folder / "base.npy", "--labels", folder / "labels.npy", "--shift", "--json").json()
    assert ppl["tokens"] == doc["tokens"] and ppl["perplexity"] == pytest.approx(doc["ppl_base"], rel=1e-12)


def test_padding_errors_and_usage(cli, padded):
    base, test, labels, folder = padded
    args = ["compare", folder / "base.npy", folder / "test.npy"]
    np.save(folder / "halves.npy", np.full(B * T, 0.5))
    bad = cli(*args, "--mask", folder / "halves.npy")
    assert bad.code == 2 and "position 0 holds 0.5" in bad.err and "1 (score the position) or 0" in bad.err
    np.save(folder / "short_mask.npy", np.ones(B * T - 1))
    short = cli(*args, "--mask", folder / "short_mask.npy")
    assert short.code == 2 and "holds 127 mask values but BASE" in short.err and "has 128 positions" in short.err
    shift = cli(*args, "--shift")
    assert shift.code == 2 and "--shift" in shift.err and "--labels" in shift.err
    np.save(folder / "none.npy", np.zeros(B * T, dtype=np.int8))
    nothing = cli(*args, "--mask", folder / "none.npy")
    assert nothing.code == 2 and "no position was scored" in nothing.err


def test_errors_name_the_input_row(cli, padded):
    """A bad value at a scored position is reported at its input row; padding is never validated."""
    base, test, labels, folder = padded
    broken = base.copy()
    broken[labels == -100] = np.nan  # NaN padding is fine: it is left out
    bad_row = int(np.flatnonzero(labels != -100)[40])
    broken[bad_row, 7] = np.inf
    np.save(folder / "broken.npy", broken.reshape(B, T, V))
    run = cli("compare", folder / "broken.npy", folder / "test.npy", "--labels", folder / "labels.npy")
    assert run.code == 2 and f"row {bad_row} has inf at column 7" in run.err
    broken[bad_row, 7] = 0.0
    np.save(folder / "broken.npy", broken.reshape(B, T, V))
    doc = cli("compare", folder / "broken.npy", folder / "test.npy", "--labels", folder / "labels.npy",
              "--json").json()
    real = np.flatnonzero(labels != -100)
    assert doc["value"] == pytest.approx(_numpy_reference(broken, test, real)["kl"].mean(), rel=1e-9)


def test_shift_moves_the_mask_with_its_labels(cli, padded):
    """With --shift a mask 0 at position t+1 drops position t, as a label of --ignore-index there would."""
    base, test, labels, folder = padded
    mask = np.ones(B * T, dtype=bool)
    mask[5::7] = False
    np.save(folder / "holes.npy", mask)
    masked = np.where(mask, labels, -100).reshape(B, T)
    next_label = np.full((B, T), -100)
    next_label[:, :-1] = masked[:, 1:]
    next_label = next_label.reshape(-1)
    kept = np.flatnonzero(next_label != -100)
    doc = cli("compare", folder / "base.npy", folder / "test.npy", "--labels", folder / "labels.npy", "--mask",
              folder / "holes.npy", "--shift", "--json").json()
    ref = _numpy_reference(base, test, kept, next_label)
    _assert_report(doc, ref, kept)
    assert doc["ppl_base"] == pytest.approx(math.exp(ref["nll_base"].mean()), rel=1e-9)
