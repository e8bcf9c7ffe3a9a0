"""klcli.kl / cross_entropy / entropy / js against scipy on random data of every rank, dtype and axis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

import klcli

RTOL, ATOL = 1e-9, 1e-14
# (shape with the outcomes last, axis at which the outcomes are placed)
LAYOUTS = [((5,), -1), ((5,), 0), ((4, 6), -1), ((4, 6), 0), ((3, 4, 5), -1), ((3, 4, 5), 1), ((3, 4, 5), 0),
           ((2, 3, 4, 5), -1), ((2, 3, 4, 5), -2), ((2, 3, 4, 5), 1)]
DTYPES = [np.float16, np.float32, np.float64, "list"]


def _distributions(rng, shape, axis):
    """Random distributions with the outcomes along ``axis`` (built last, then moved)."""
    values = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return np.moveaxis(values, -1, axis)


def _as(values: np.ndarray, dtype):
    """The input as given to klcli, and the float64 values it holds (what the oracle sees)."""
    if dtype == "list":
        return values.tolist(), values
    cast = values.astype(dtype)
    return cast, cast.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_kl_entropy_xent_js_match_scipy(shape, axis, dtype):
    rng = np.random.default_rng(abs(hash((shape, axis))) % 2**32)
    p_in, p = _as(_distributions(rng, shape, axis), dtype)
    q_in, q = _as(_distributions(rng, shape, axis), dtype)
    # scipy.stats.entropy renormalises, as klcli does for validated rows.
    expected_kl = stats.entropy(p, q, axis=axis)
    expected_h = stats.entropy(p, axis=axis)
    np.testing.assert_allclose(klcli.kl(p_in, q_in, axis=axis), expected_kl, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(klcli.entropy(p_in, axis=axis), expected_h, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(klcli.cross_entropy(p_in, q_in, axis=axis), expected_h + expected_kl,
                               rtol=RTOL, atol=ATOL)
    p_n, q_n = p / p.sum(axis=axis, keepdims=True), q / q.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(klcli.kl(p_in, q_in, axis=axis), special.rel_entr(p_n, q_n).sum(axis=axis),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(klcli.js(p_in, q_in, axis=axis), jensenshannon(p, q, axis=axis) ** 2,
                               rtol=1e-8, atol=ATOL)
    np.testing.assert_allclose(klcli.js(p_in, q_in, axis=axis, distance=True), jensenshannon(p, q, axis=axis),
                               rtol=1e-8, atol=ATOL)
    assert np.shape(klcli.kl(p_in, q_in, axis=axis)) == np.shape(expected_kl)


@pytest.mark.parametrize("base", [2, 10, 3.5])
def test_base(base):
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(7), size=6), rng.dirichlet(np.ones(7), size=6)
    np.testing.assert_allclose(klcli.kl(p, q, base=base), stats.entropy(p, q, axis=1, base=base), rtol=RTOL)
    np.testing.assert_allclose(klcli.entropy(p, base=base), stats.entropy(p, axis=1, base=base), rtol=RTOL)
    np.testing.assert_allclose(klcli.js(p, q, base=base, distance=True), jensenshannon(p, q, axis=1, base=base),
                               rtol=1e-8)
    np.testing.assert_allclose(klcli.cross_entropy(p, q, base=base),
                               -(p * np.log(q)).sum(axis=1) / np.log(base), rtol=RTOL)


def test_one_distribution_gives_a_0d_float64_as_scipy():
    value = klcli.kl([0.2, 0.8], [0.5, 0.5])
    reference = stats.entropy([0.2, 0.8], [0.5, 0.5])
    assert type(value) is type(reference) is np.float64
    assert np.ndim(value) == 0 and value == pytest.approx(reference, rel=RTOL)
    for function in (klcli.entropy, lambda p: klcli.js(p, [0.5, 0.5]), lambda p: klcli.cross_entropy(p, p)):
        assert type(function([0.2, 0.8])) is np.float64


def test_broadcasting_as_numpy():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4), size=(3, 1))
    q = rng.dirichlet(np.ones(4), size=(1, 5))
    pb, qb = np.broadcast_arrays(p, q)
    result = klcli.kl(p, q)
    assert result.shape == (3, 5)
    np.testing.assert_allclose(result, stats.entropy(pb, qb, axis=-1), rtol=RTOL)
    # one distribution against many, on either side
    np.testing.assert_allclose(klcli.kl(p[0, 0], q[0]), stats.entropy(p[0, 0], q[0], axis=-1), rtol=RTOL)
    np.testing.assert_allclose(klcli.js(q[0], p[0, 0]), jensenshannon(q[0], p[0, 0], axis=-1) ** 2, rtol=1e-8)
    np.testing.assert_allclose(klcli.cross_entropy(p[:, 0], q[0, 0]),
                               -(p[:, 0] * np.log(q[0, 0])).sum(axis=-1), rtol=RTOL)


def test_logits_and_logprobs_against_scipy_log_softmax():
    rng = np.random.default_rng(3)
    z, y = rng.normal(scale=3, size=(2, 3, 50)), rng.normal(scale=3, size=(2, 3, 50))
    log_p, log_q = special.log_softmax(z, axis=-1), special.log_softmax(y, axis=-1)
    expected = special.rel_entr(np.exp(log_p), np.exp(log_q)).sum(axis=-1)
    np.testing.assert_allclose(klcli.kl(z, y, kind="logits"), expected, rtol=RTOL)
    np.testing.assert_allclose(klcli.kl(log_p, log_q, kind="logprobs"), expected, rtol=RTOL)
    np.testing.assert_allclose(klcli.kl(np.exp(log_p), y, q_kind="logits"), expected, rtol=RTOL)
    np.testing.assert_allclose(klcli.kl(z, np.exp(log_q), p_kind="logits"), expected, rtol=RTOL)
    np.testing.assert_allclose(klcli.entropy(z, kind="logits"), stats.entropy(np.exp(log_p), axis=-1), rtol=RTOL)
    np.testing.assert_allclose(klcli.js(z, y, kind="logits"),
                               jensenshannon(np.exp(log_p), np.exp(log_q), axis=-1) ** 2, rtol=1e-8)
    # float32 logits along axis 1
    z32 = np.moveaxis(z, -1, 1).astype(np.float32)
    y32 = np.moveaxis(y, -1, 1).astype(np.float32)
    p32 = special.softmax(z32.astype(np.float64), axis=1)
    q32 = special.softmax(y32.astype(np.float64), axis=1)
    np.testing.assert_allclose(klcli.kl(z32, y32, kind="logits", axis=1), special.rel_entr(p32, q32).sum(axis=1),
                               rtol=RTOL)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 7.0])
def test_temperature(temperature):
    rng = np.random.default_rng(4)
    z, y = rng.normal(scale=4, size=(5, 30)), rng.normal(scale=4, size=(5, 30))
    p, q = special.softmax(z / temperature, axis=1), special.softmax(y / temperature, axis=1)
    np.testing.assert_allclose(klcli.kl(z, y, kind="logits", temperature=temperature),
                               special.rel_entr(p, q).sum(axis=1), rtol=RTOL)
    # on probabilities: softmax(log p / T)
    p0, q0 = special.softmax(z, axis=1), special.softmax(y, axis=1)
    np.testing.assert_allclose(klcli.kl(p0, q0, temperature=temperature), special.rel_entr(p, q).sum(axis=1),
                               rtol=RTOL)


def test_reverse_direction():
    rng = np.random.default_rng(5)
    p, q = rng.dirichlet(np.ones(6), size=4), rng.dirichlet(np.ones(6), size=4)
    np.testing.assert_allclose(klcli.kl(p, q, direction="reverse"), stats.entropy(q, p, axis=1), rtol=RTOL)
    np.testing.assert_allclose(klcli.cross_entropy(p, q, direction="reverse"), -(q * np.log(p)).sum(axis=1),
                               rtol=RTOL)


@pytest.mark.parametrize("weights", [(0.1, 0.9), (0.7, 0.3), (1.0, 0.0)])
def test_weighted_js_against_the_formula(weights):
    rng = np.random.default_rng(6)
    p, q = rng.dirichlet(np.ones(8), size=5), rng.dirichlet(np.ones(8), size=5)
    w1, w2 = weights
    m = w1 * p + w2 * q
    expected = w1 * special.rel_entr(p, m).sum(axis=1) + w2 * special.rel_entr(q, m).sum(axis=1)
    np.testing.assert_allclose(klcli.js(p, q, weights=weights), expected, rtol=1e-8, atol=ATOL)
    np.testing.assert_allclose(klcli.js(p, q, weights=np.array(weights), base=2, distance=True),
                               np.sqrt(expected / np.log(2)), rtol=1e-8, atol=1e-7)


def test_zero_and_infinity_rules():
    p = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    expected = special.rel_entr(p, q).sum(axis=1)  # scipy's rules: p = 0 gives 0, p > 0 = q gives inf
    result = klcli.kl(p, q)
    assert result[0] == np.inf and expected[0] == np.inf
    np.testing.assert_allclose(result[1:], expected[1:], rtol=RTOL)
    assert klcli.cross_entropy(p, q)[0] == np.inf
    assert klcli.entropy([1.0, 0.0, 0.0]) == 0.0
    # epsilon smooths both sides: (x + ε) / Σ(x + ε)
    eps = 1e-3
    p_s, q_s = (p + eps) / (p + eps).sum(1, keepdims=True), (q + eps) / (q + eps).sum(1, keepdims=True)
    np.testing.assert_allclose(klcli.kl(p, q, epsilon=eps), special.rel_entr(p_s, q_s).sum(axis=1), rtol=RTOL)


def test_counts_with_normalize_and_integer_input():
    counts = np.array([[1, 3], [2, 2]])
    np.testing.assert_allclose(klcli.entropy(counts, normalize=True), stats.entropy(counts, axis=1), rtol=RTOL)
    np.testing.assert_allclose(klcli.kl(counts, [[3, 1]], normalize=True),
                               stats.entropy(counts, [[3, 1], [3, 1]], axis=1), rtol=RTOL)


def test_empty_leading_axis():
    assert klcli.kl(np.zeros((0, 3)), [0.2, 0.3, 0.5]).shape == (0,)
    assert klcli.entropy(np.zeros((2, 0, 3))).shape == (2, 0)


def test_many_blocks_match_scipy_and_name_the_row():
    """Inputs above a block (about a million values) are taken block by block, as the CLI reads files."""
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.ones(5000), size=(3, 100)).astype(np.float32)  # 300 rows: two blocks of ≤ 209
    q = rng.dirichlet(np.ones(5000), size=(1, 100))  # broadcast along the first axis
    pb, qb = np.broadcast_arrays(p.astype(np.float64), q)
    np.testing.assert_allclose(klcli.kl(p, q), stats.entropy(pb, qb, axis=-1), rtol=RTOL)
    bad = p.copy()
    bad[2, 50, 0] += 0.5  # row 2·100 + 50, in the second block
    with pytest.raises(ValueError, match="^p: row 250 sums to"):
        klcli.kl(bad, q)
