"""Top-K references in the core: the top ids, the exact tail, and divergences on the partition.

The oracles are written out here in float64 NumPy (math.fsum for the tails), independently of klcli's kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcli.core.compare import position_stats, total_variation
from klcli.core.discrete import js_rows, kl_rows
from klcli.core.logspace import as_log_rows
from klcli.core.reference import packed, reference_of, reference_rows, top_k_ids


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _oracle_top(values: np.ndarray, k: int) -> np.ndarray:
    """Brute force: a full stable sort on (−value, id)."""
    return np.array([sorted(range(row.size), key=lambda i: (-row[i], i))[:k] for row in values])


@pytest.mark.parametrize(("k", "vocab"), [(1, 20), (3, 20), (7, 20), (20, 20), (64, 300), (65, 300), (120, 300)])
def test_top_k_ids_ties_by_lowest_id(k, vocab):
    rng = np.random.default_rng(k)
    values = rng.integers(0, 4, size=(30, vocab)).astype(np.float64)  # many ties
    np.testing.assert_array_equal(top_k_ids(values, k), _oracle_top(values, k))
    values = rng.normal(size=(30, vocab))
    np.testing.assert_array_equal(top_k_ids(values, k), _oracle_top(values, k))


def _reference(logits: np.ndarray, k: int, labels=None):
    rows = as_log_rows(np.asarray(logits, dtype=np.float32), "logits", label="P")
    written = reference_of(rows, k, labels)
    block = packed(written.ids, written.logprobs, written.tail, labels, written.label_logprobs)
    ref = reference_rows(block, top_k=k, vocab=logits.shape[1], has_labels=labels is not None, label="REF",
                         stored="float64")
    return written, ref


def test_tail_is_the_exact_mass_of_the_rest_even_when_it_is_tiny():
    # The top token holds all but ~1e-13 of the mass: log(1 − Σ p_top) would be rounding noise.
    logits = np.array([[40.0, 9.0, 8.0, 0.0, -1.0, -2.0]])
    written, _ = _reference(logits, 2)
    log_p = _log_softmax(logits.astype(np.float32))[0]
    order = sorted(range(6), key=lambda i: (-log_p[i], i))
    rest = math.fsum(math.exp(log_p[i]) for i in order[2:])
    assert written.tail[0] == pytest.approx(math.log(rest), rel=1e-12)
    assert written.ids.tolist() == [order[:2]]


def _partition_oracle(logits_p, logits_q, k):
    """KL, reverse KL, JS and TV on {top-k of P} ∪ {tail}, from full float64 softmaxes."""
    log_p, log_q = _log_softmax(logits_p.astype(np.float32)), _log_softmax(logits_q.astype(np.float32))
    out = {"kl": [], "kl_reverse": [], "js": [], "tv": []}
    for lp, lq in zip(log_p, log_q):
        top = sorted(range(lp.size), key=lambda i: (-lp[i], i))[:k]
        rest = [i for i in range(lp.size) if i not in top]
        p = np.array([math.exp(lp[i]) for i in top] + [math.fsum(math.exp(lp[i]) for i in rest)])
        q = np.array([math.exp(lq[i]) for i in top] + [math.fsum(math.exp(lq[i]) for i in rest)])
        p, q = p[p + q > 0], q[p + q > 0]
        m = 0.5 * (p + q)
        out["kl"].append(np.sum(np.where(p > 0, p * np.log(p / q), 0)))
        out["kl_reverse"].append(np.sum(np.where(q > 0, q * np.log(q / p), 0)))
        out["js"].append(0.5 * np.sum(np.where(p > 0, p * np.log(p / m), 0))
                         + 0.5 * np.sum(np.where(q > 0, q * np.log(q / m), 0)))
        out["tv"].append(0.5 * np.sum(np.abs(p - q)))
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("k", [1, 4, 16, 40])
def test_partition_divergences_match_a_float64_oracle(k):
    rng = np.random.default_rng(3)
    logits_p = rng.normal(0, 2, size=(12, 40))
    logits_q = logits_p + rng.normal(0, 0.7, size=logits_p.shape)
    _, ref = _reference(logits_p, k)
    q = as_log_rows(logits_q.astype(np.float32), "logits", label="Q")
    oracle = _partition_oracle(logits_p, logits_q, k)
    np.testing.assert_allclose(kl_rows(ref, q), oracle["kl"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(kl_rows(q, ref), oracle["kl_reverse"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(js_rows(ref, q), oracle["js"], rtol=1e-9, atol=1e-14)
    stats = position_stats(ref, q, min(k, 5))
    np.testing.assert_allclose(stats["kl"], oracle["kl"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(stats["tv"], oracle["tv"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(stats["js"], oracle["js"], rtol=1e-9, atol=1e-14)


def test_partition_divergences_equal_the_full_ones_at_k_equal_v():
    rng = np.random.default_rng(4)
    logits_p = rng.normal(0, 2, size=(10, 30)).astype(np.float32)
    logits_q = (logits_p + rng.normal(0, 0.5, size=logits_p.shape)).astype(np.float32)
    _, ref = _reference(logits_p, 30)
    p = as_log_rows(logits_p, "logits", label="P")
    q = as_log_rows(logits_q, "logits", label="Q")
    np.testing.assert_allclose(kl_rows(ref, q), kl_rows(p, q), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(js_rows(ref, q), js_rows(p, q), rtol=1e-9, atol=1e-14)
    full_tv = total_variation(p, q)
    np.testing.assert_allclose(position_stats(ref, q, 5)["tv"], full_tv, rtol=1e-9, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 12), spread=st.floats(0.1, 5.0))
def test_partition_figures_are_lower_bounds(seed, k, spread):
    """The data-processing inequality: merging outcomes never raises an f-divergence."""
    rng = np.random.default_rng(seed)
    logits_p = rng.normal(0, spread, size=(4, 12)).astype(np.float32)
    logits_q = (logits_p + rng.normal(0, 1.0, size=logits_p.shape)).astype(np.float32)
    _, ref = _reference(logits_p, k)
    p = as_log_rows(logits_p, "logits", label="P")
    q = as_log_rows(logits_q, "logits", label="Q")
    slack = 1e-12
    assert np.all(kl_rows(ref, q) <= kl_rows(p, q) * (1 + 1e-9) + slack)
    assert np.all(kl_rows(q, ref) <= kl_rows(q, p) * (1 + 1e-9) + slack)
    assert np.all(js_rows(ref, q) <= js_rows(p, q) * (1 + 1e-9) + slack)
    assert np.all(position_stats(ref, q, 1)["tv"] <= total_variation(p, q) + slack)


def test_label_log_probabilities_are_exact_inside_and_outside_the_top_k():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, size=(8, 25))
    log_p = _log_softmax(logits.astype(np.float32))
    top = top_k_ids(log_p, 3)
    labels = np.array([top[0, 0], top[1, 2], 24, 0, top[4, 1], 13, 7, 9])  # some in the top 3, most not
    _, ref = _reference(logits, 3, labels)
    np.testing.assert_allclose(ref.label_logprob(labels), log_p[np.arange(8), labels], rtol=1e-12, atol=1e-15)
    # Another label than the stored one: known only inside the top K.
    inside = top[:, 1]
    np.testing.assert_allclose(ref.label_logprob(inside), log_p[np.arange(8), inside], rtol=1e-12)
    with pytest.raises(ValueError, match="neither the label stored with the reference nor among its top-K"):
        ref.label_logprob(np.where(labels == 24, 23, 24))


def test_a_tail_far_below_the_top_stays_finite_on_both_sides():
    """A rest 800 nats under the top underflows e^(z − max); its log-sum-exp does not."""
    logits = np.array([[0.0, -800.0, -801.0, -802.0]])
    written, ref = _reference(logits, 1)
    assert written.tail[0] == pytest.approx(-800.0 + math.log(1 + math.exp(-1) + math.exp(-2)), rel=1e-12)
    confident = as_log_rows(np.array([[0.0, -900.0, -900.0, -900.0]], dtype=np.float32), "logits", label="Q")
    divergence = kl_rows(ref, confident)  # p_tail·log(p_tail/q_tail), with p_tail = e^−800: 0, not inf or NaN
    assert divergence.tolist() == [0.0]
    _, wide = _reference(np.array([[0.0, -30.0, -31.0, -32.0]]), 1)
    assert np.isfinite(kl_rows(wide, confident)[0]) and kl_rows(wide, confident)[0] > 0
