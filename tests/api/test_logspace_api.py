"""klcli.log_softmax / logsumexp / summarize against scipy and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import klcli


@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_log_softmax_and_logsumexp_match_scipy(axis, dtype):
    x = np.random.default_rng(7).normal(scale=5, size=(3, 4, 5)).astype(dtype)
    wide = x.astype(np.float64)
    np.testing.assert_allclose(klcli.log_softmax(x, axis=axis), special.log_softmax(wide, axis=axis),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(klcli.logsumexp(x, axis=axis), special.logsumexp(wide, axis=axis), rtol=1e-13)
    np.testing.assert_allclose(klcli.logsumexp(x, axis=axis, keepdims=True),
                               special.logsumexp(wide, axis=axis, keepdims=True), rtol=1e-13)


def test_logsumexp_weights_and_extremes():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(4, 6)), rng.uniform(size=(4, 6))
    b[0, :3] = 0.0
    np.testing.assert_allclose(klcli.logsumexp(a, b=b), special.logsumexp(a, b=b, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(klcli.logsumexp(a, b=b[0], axis=1), special.logsumexp(a, b=b[0], axis=1), rtol=1e-13)
    assert klcli.logsumexp([1e4, 1e4]) == pytest.approx(1e4 + np.log(2), rel=1e-15)
    assert klcli.logsumexp([-np.inf, -np.inf]) == -np.inf
    assert type(klcli.logsumexp([0.0, 0.0])) is np.float64
    with pytest.raises(ValueError, match="b must hold weights >= 0"):
        klcli.logsumexp(a, b=-b)


def test_log_softmax_temperature_and_huge_logits():
    z = np.array([[1e4, -1e4, 0.0], [3.0, 1.0, 2.0]])
    np.testing.assert_allclose(klcli.log_softmax(z, temperature=2.0), special.log_softmax(z / 2.0, axis=-1),
                               rtol=1e-13)
    assert np.isfinite(klcli.log_softmax(z)).all()


def test_summarize_flattens_any_array_like():
    values = [[3.0, 1.0], [4.0, 2.0]]
    summary = klcli.summarize(values)
    flat = np.array(values).reshape(-1)
    assert summary["count"] == 4 and summary["argmax"] == 2
    assert summary["mean"] == pytest.approx(np.mean(flat))
    assert summary["std"] == pytest.approx(np.std(flat, ddof=1))
    assert summary["p90"] == pytest.approx(np.percentile(flat, 90))
