"""The discrete kernels against literal values, scipy, mpmath and their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from klcli.core.discrete import cross_entropy, entropy, js_divergence, kl_divergence
from klcli.core.logspace import as_log_rows, log_softmax, logsumexp

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")
scipy_distance = pytest.importorskip("scipy.spatial.distance")


def test_literal_values():
    assert kl_divergence([0.5, 0.5], [0.9, 0.1])[0] == 0.5108256237659907  # log(5/3), correctly rounded
    assert kl_divergence([0.25, 0.75], [0.5, 0.5])[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5),
                                                                       rel=1e-15)
    # H(P,Q) for P=(½,½), Q=(¼,¾): ½·ln 4 + ½·ln(4/3)
    assert cross_entropy([0.5, 0.5], [0.25, 0.75])[0] == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(4 / 3),
                                                                       rel=1e-15)
    assert entropy([0.5, 0.5])[0] == pytest.approx(math.log(2), rel=1e-15)
    # JS of disjoint supports is log 2; of P=(1,0), Q=(½,½): ½·ln(4/3) + ½(½ln(2/3) + ½ln 2)
    assert js_divergence([1, 0], [0, 1])[0] == pytest.approx(math.log(2), rel=1e-15)
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert js_divergence([1, 0], [0.5, 0.5])[0] == pytest.approx(expected, rel=1e-14)


def test_zero_rules():
    assert kl_divergence([1.0, 0.0], [0.5, 0.5])[0] == pytest.approx(math.log(2), rel=1e-15)  # 0·log 0 = 0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0])[0] == math.inf  # p > 0 where q = 0
    assert cross_entropy([0.5, 0.5], [1.0, 0.0])[0] == math.inf
    assert entropy([1.0, 0.0])[0] == 0.0
    assert js_divergence([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])[0] == pytest.approx(0.5 * math.log(2), rel=1e-14)


def _random_pair(seed, rows=6, outcomes=40, zeros=False):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(outcomes, 0.7), size=rows)
    q = rng.dirichlet(np.full(outcomes, 0.7), size=rows)
    if zeros:
        p[:, :3] = 0
        p /= p.sum(axis=1, keepdims=True)
    return p, q


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy(seed):
    p, q = _random_pair(seed, zeros=seed % 2 == 1)
    np.testing.assert_allclose(kl_divergence(p, q), scipy_stats.entropy(p, q, axis=1), rtol=1e-12)
    np.testing.assert_allclose(entropy(p), scipy_stats.entropy(p, axis=1), rtol=1e-12)
    np.testing.assert_allclose(cross_entropy(p, q), -np.sum(scipy_special.xlogy(p, q), axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(js_divergence(p, q)), scipy_distance.jensenshannon(p, q, axis=1),
                               rtol=1e-12)


def test_logits_against_scipy_log_softmax():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, size=(5, 30))
    np.testing.assert_allclose(log_softmax(z), scipy_special.log_softmax(z, axis=1), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(logsumexp(z), scipy_special.logsumexp(z, axis=1), rtol=1e-14)
    y = z + rng.normal(0, 1, size=z.shape)
    p, q = scipy_special.softmax(z, axis=1), scipy_special.softmax(y, axis=1)
    np.testing.assert_allclose(kl_divergence(z, y, kind="logits"), scipy_stats.entropy(p, q, axis=1), rtol=1e-11)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_extreme_logits_are_finite_and_correct(dtype):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=dtype)
    y = np.array([[0.0, 1e4, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype)
    # P puts all mass on one outcome: D = log p_P(top) − log p_Q(top) = 0 − (0 − 1e4) in row 0; row 1: log 2.
    values = kl_divergence(z, y, kind="logits")
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, [1e4, math.log(2)], rtol=1e-12)
    assert np.isfinite(js_divergence(z, y, kind="logits")).all()


def _mp_kl(p, q):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    return float(sum(mpmath.mpf(a) * mpmath.log(mpmath.mpf(a) / mpmath.mpf(b)) for a, b in zip(p, q) if a > 0))


def _mp_js(p, q):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    total = mpmath.mpf(0)
    for a, b in zip(p, q):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        m = (a + b) / 2
        if a > 0:
            total += a * mpmath.log(a / m) / 2
        if b > 0:
            total += b * mpmath.log(b / m) / 2
    return float(total)


def test_nearly_identical_distributions_are_not_noise():
    """KL ≈ 1e-9 and JS ≈ 1e-10: within 1e-9 relative of a 200-bit reference."""
    rng = np.random.default_rng(11)
    z = rng.normal(0, 2, size=200)
    y = z + 5.0 + rng.normal(0, 1e-4, size=200)
    p = np.exp(z - logsumexp(z))
    q = np.exp(y - logsumexp(y))
    got_kl = kl_divergence(z, y, kind="logits")[0]
    got_js = js_divergence(p, q)[0]
    want_kl, want_js = _mp_kl(p, q), _mp_js(p, q)
    assert 1e-11 < want_kl < 1e-7
    # The logits path is compared with the probabilities it implies (rounded once): 1e-6 relative
    # covers that rounding; the probability path is compared exactly.
    assert got_kl == pytest.approx(want_kl, rel=1e-6)
    assert kl_divergence(p, q)[0] == pytest.approx(want_kl, rel=1e-9, abs=1e-14)
    assert got_js == pytest.approx(want_js, rel=1e-9, abs=1e-14)


def test_one_ulp_apart_js_distance_is_tiny_not_nan():
    p = np.array([0.3, 0.7])
    q = np.array([np.nextafter(0.3, 1), np.nextafter(0.7, 0)])
    value = js_divergence(p, q)[0]
    assert value >= 0 and math.isfinite(value) and math.sqrt(value) < 1e-15


def test_temperature_and_normalize():
    z = np.array([[1.0, 2.0, 3.0]])
    tempered = as_log_rows(z, "logits", label="P", temperature=2.0).log_probs()
    np.testing.assert_allclose(tempered, scipy_special.log_softmax(z / 2.0, axis=1), rtol=1e-14)
    counts = as_log_rows(np.array([[2.0, 6.0]]), "probs", label="P", normalize=True)
    np.testing.assert_allclose(counts.probs(), [[0.25, 0.75]], rtol=1e-15)
    smoothed = as_log_rows(np.array([[1.0, 0.0]]), "probs", label="P", epsilon=0.1)
    np.testing.assert_allclose(smoothed.probs(), [[1.1 / 1.2, 0.1 / 1.2]], rtol=1e-15)


# --- invariants -------------------------------------------------------------

_rows = st.integers(min_value=2, max_value=12).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(0.01, 10.0)),
        arrays(np.float64, n, elements=st.floats(0.01, 10.0)),
    )
)


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_invariants(pair):
    p, q = (v / v.sum() for v in pair)
    d = kl_divergence(p, q)[0]
    assert d >= 0
    assert kl_divergence(p, p)[0] == pytest.approx(0.0, abs=1e-15)
    assert cross_entropy(p, q)[0] == pytest.approx(entropy(p)[0] + d, rel=1e-12, abs=1e-14)
    js_pq, js_qp = js_divergence(p, q)[0], js_divergence(q, p)[0]
    assert js_pq == pytest.approx(js_qp, rel=1e-12, abs=1e-15)
    assert 0 <= js_pq <= math.log(2) + 1e-15


def test_kl_is_not_symmetric():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert kl_divergence(p, q)[0] != pytest.approx(kl_divergence(q, p)[0], rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, 8, elements=st.floats(-30, 30)), st.floats(-1e3, 1e3),
       arrays(np.float64, 8, elements=st.floats(-30, 30)))
def test_logits_shift_invariance_and_unit_temperature(z, shift, y):
    base = kl_divergence(z, y, kind="logits")[0]
    assert kl_divergence(z + shift, y, kind="logits")[0] == pytest.approx(base, rel=1e-9, abs=1e-12)
    plain = as_log_rows(z[None], "logits", label="P").log_probs()
    tempered = as_log_rows(z[None], "logits", label="P", temperature=1.0).log_probs()
    np.testing.assert_array_equal(plain, tempered)
