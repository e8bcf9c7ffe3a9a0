"""Numerical stress: extreme logits, subnormal probabilities, tiny and huge vocabularies, float16 limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from klcli.core.discrete import js_divergence, kl_divergence

mpmath = pytest.importorskip("mpmath")
special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")
mpmath.mp.prec = 200


def mp_kl(p, q):
    p = [mpmath.mpf(float(x)) for x in p]
    q = [mpmath.mpf(float(x)) for x in q]
    sp, sq = sum(p), sum(q)
    return float(sum(a / sp * mpmath.log((a / sp) / (b / sq)) for a, b in zip(p, q) if a > 0))


def test_vocabulary_of_one(cli):
    assert float(cli("kl", "--logits", "-q", "--", "3;5", "-2").out) == 0.0
    assert float(cli("js", "--logits", "-q", "--", "3;5", "-2").out) == 0.0
    assert float(cli("perplexity", "7;1", "--labels", "0,0", "-q").out) == 1.0


def test_vocabulary_of_a_million(tmp_path, cli):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(1, 1_000_000)).astype(np.float32)
    y = (z + rng.normal(0, 0.1, size=z.shape)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    got = float(cli("kl", tmp_path / "z.npy", tmp_path / "y.npy", "--logits", "-q").out)
    log_p, log_q = special.log_softmax(z.astype(np.float64), axis=1), special.log_softmax(y.astype(np.float64), axis=1)
    expected = float(np.sum(np.exp(log_p) * (log_p - log_q)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_subnormal_probabilities():
    for p, q in (([1e-310, 1.0], [0.5, 0.5]), ([0.5, 0.5], [1e-310, 1.0]), ([5e-324, 0.25, 0.75], [0.3, 0.3, 0.4])):
        got = kl_divergence(p, q)[0]
        assert math.isfinite(got)
        assert got == pytest.approx(mp_kl(p, q), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("scale", [65504.0, 1e4, 1.0])
def test_float16_extremes(scale):
    rng = np.random.default_rng(1)
    z = (rng.uniform(-1, 1, size=(6, 40)) * scale).astype(np.float16)
    y = (rng.uniform(-1, 1, size=(6, 40)) * scale).astype(np.float16)
    z[0, 0], y[1, 1] = np.float16(65504), np.float16(-65504)
    got = kl_divergence(z, y, kind="logits")
    log_p = special.log_softmax(z.astype(np.float64), axis=1)
    log_q = special.log_softmax(y.astype(np.float64), axis=1)
    p = np.exp(log_p)
    expected = np.sum(np.where(p > 0, p * (log_p - log_q), 0.0), axis=1)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
    assert np.all(np.isfinite(js_divergence(z, y, kind="logits")))


def test_float16_tiny_probabilities():
    p = np.array([6e-8, 1 - 6e-8], dtype=np.float16)  # 6e-8 is a float16 subnormal
    q = np.array([0.5, 0.5], dtype=np.float16)
    assert kl_divergence(p, q)[0] == pytest.approx(mp_kl(p, q), rel=1e-9)


def test_rows_one_ulp_apart_in_float32():
    z = np.random.default_rng(2).normal(size=(3, 50)).astype(np.float32)
    y = z.copy()
    y[:, 7] = np.nextafter(y[:, 7], np.float32(np.inf))
    js = js_divergence(z, y, kind="logits")
    assert np.all(np.isfinite(js)) and np.all(js >= 0)
    assert np.all(np.sqrt(js) < 1e-6)
    kl = kl_divergence(z, y, kind="logits")
    assert np.all(kl >= 0) and np.all(kl < 1e-12)
