"""The stats, perplexity and compare kernels called directly, against independent NumPy/scipy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from klcli.core.compare import agreement_stderr, label_stats, paired_difference, position_stats, top_k
from klcli.core.logspace import as_log_rows
from klcli.core.perplexity import corpus_perplexity, sequence_perplexities, shifted_labels, token_nll
from klcli.core.stats import PERCENTILES, SUMMARY_KEYS, summarize

special = pytest.importorskip("scipy.special")


def test_summary_against_numpy():
    values = np.random.default_rng(0).gamma(2.0, size=1001)
    summary = summarize(values)
    # SPEC §4's key list, in its order.
    spec_keys = "count mean std stderr min p0_1 p1 p5 p10 p25 median p75 p90 p95 p99 p99_9 max argmax".split()
    assert list(summary) == list(SUMMARY_KEYS) == spec_keys and summary["count"] == 1001
    assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-15)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-14)
    assert summary["stderr"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(1001), rel=1e-14)
    for key, fraction in PERCENTILES:
        assert summary[key] == pytest.approx(np.percentile(values, 100 * fraction), rel=1e-14), key
    assert (summary["min"], summary["max"], summary["argmax"]) == (values.min(), values.max(), int(values.argmax()))


def test_summary_edge_cases():
    assert summarize(np.array([])) == {key: (0 if key == "count" else None) for key in SUMMARY_KEYS}
    one = summarize(np.array([2.5]))
    assert one["std"] is None and one["median"] == 2.5 and one["argmax"] == 0
    infinite = summarize(np.array([1.0, np.inf, 1.0]))
    assert infinite["std"] is None and infinite["max"] == np.inf and infinite["argmax"] == 1
    ties = summarize(np.array([3.0, 1.0, 3.0]))
    assert ties["argmax"] == 0  # the first of equal maxima


def _logits(rows=40, vocab=30, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, vocab)) * 3


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_nll_against_scipy(temperature):
    logits = _logits()
    labels = np.random.default_rng(1).integers(0, 30, size=40)
    labels[::5] = -100
    loss, counted = token_nll(logits, labels, temperature=temperature)
    log_p = special.log_softmax(logits / temperature, axis=1)
    expected = -log_p[np.arange(40), np.where(labels >= 0, labels, 0)]
    assert counted.tolist() == (labels != -100).tolist()
    np.testing.assert_allclose(loss[counted], expected[counted], rtol=1e-13)
    assert np.all(loss[~counted] == 0.0)


def test_label_smoothing_is_pytorchs_formula():
    logits, labels = _logits(), np.arange(40) % 30
    loss, _ = token_nll(logits, labels, label_smoothing=0.2)
    log_p = special.log_softmax(logits, axis=1)
    expected = 0.8 * -log_p[np.arange(40), labels] + 0.2 * -log_p.mean(axis=1)
    np.testing.assert_allclose(loss, expected, rtol=1e-13)


def test_sequence_and_corpus_perplexity():
    losses = np.array([math.log(2), math.log(8), math.log(4)])
    assert corpus_perplexity(float(losses.sum()), 3) == pytest.approx(4.0, rel=1e-15)
    np.testing.assert_allclose(sequence_perplexities(np.array([math.log(16), math.log(4)]), np.array([2, 1])),
                               [4.0, 4.0], rtol=1e-15)
    shifted = np.concatenate(list(shifted_labels([np.arange(6)], 3, -100)))
    assert shifted.tolist() == [1, 2, -100, 4, 5, -100]


def test_position_stats_against_direct_formulas():
    base_logits, test_logits = _logits(seed=2), _logits(seed=3)
    base = as_log_rows(base_logits, "logits", label="BASE")
    test = as_log_rows(test_logits, "logits", label="TEST")
    stats = position_stats(base, test, 5)
    log_p, log_q = special.log_softmax(base_logits, axis=1), special.log_softmax(test_logits, axis=1)
    p, q = np.exp(log_p), np.exp(log_q)
    m = 0.5 * (p + q)
    np.testing.assert_allclose(stats["kl"], np.sum(p * (log_p - log_q), axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["kl_reverse"], np.sum(q * (log_q - log_p), axis=1), rtol=1e-12)
    js = 0.5 * np.sum(p * np.log(p / m), axis=1) + 0.5 * np.sum(q * np.log(q / m), axis=1)
    np.testing.assert_allclose(stats["js"], js, rtol=1e-11)
    np.testing.assert_allclose(stats["tv"], 0.5 * np.abs(p - q).sum(axis=1), rtol=1e-12)
    assert stats["base_top1"].tolist() == np.argmax(base_logits, axis=1).tolist()
    assert stats["test_top1"].tolist() == np.argmax(test_logits, axis=1).tolist()
    base_top = np.argsort(-base_logits, axis=1, kind="stable")[:, :5]
    test_top = np.argsort(-test_logits, axis=1, kind="stable")[:, :5]
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(base_top.tolist(), test_top.tolist())]
    np.testing.assert_allclose(stats["topk_overlap"], overlap, rtol=0)

    labels = np.arange(40) % 30
    figures = label_stats(base, test, labels)
    np.testing.assert_allclose(figures["nll_base"], -log_p[np.arange(40), labels], rtol=1e-13)
    np.testing.assert_allclose(figures["delta_p"], q[np.arange(40), labels] - p[np.arange(40), labels],
                               rtol=1e-12, atol=1e-16)


def test_top_k_matches_a_stable_sort_with_ties():
    values = np.random.default_rng(4).integers(0, 6, size=(50, 700)).astype(np.float64)
    expected = np.argsort(-values, axis=1, kind="stable")[:, :7]
    assert top_k(values, 7).tolist() == expected.tolist()


def test_agreement_and_paired_difference_standard_errors():
    assert agreement_stderr(0.9, 11) == pytest.approx(math.sqrt(0.9 * 0.1 / 10), rel=1e-15)
    assert agreement_stderr(1.0, 1) is None
    test, base = np.array([3.0, 1.0, 4.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])
    mean, stderr = paired_difference(test, base)
    assert mean == 1.25 and stderr == pytest.approx(np.std(test - base, ddof=1) / 2, rel=1e-15)


@pytest.mark.parametrize("case", ["all equal", "mostly tied", "three values", "tied above the rest"])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_on_tied_rows_takes_the_lowest_ids(case, k):
    rng = np.random.default_rng(len(case) * 100 + k)
    shape = (12, 3000)
    rows = {
        "all equal": np.zeros(shape),
        "mostly tied": np.where(rng.random(shape) < 0.99, -1e4, rng.standard_normal(shape)),
        "three values": rng.integers(0, 3, shape).astype(float),
        "tied above the rest": np.where(rng.random(shape) < 0.3, 2.0, rng.standard_normal(shape)),
    }[case].astype(np.float32)
    # Independently: a stable sort by value, descending, keeps equal values in index order.
    expected = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k(rows, k), expected)
