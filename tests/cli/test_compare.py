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
                        "vocabulary\n")
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
