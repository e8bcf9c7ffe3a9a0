"""klcli.gaussian_kl against the closed forms written out in NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import klcli


def _univariate(mu1, s1, mu2, s2):
    return np.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5


def _full(mu1, cov1, mu2, cov2):
    k = mu1.shape[-1]
    inv2 = np.linalg.inv(cov2)
    diff = mu2 - mu1
    return 0.5 * (np.trace(inv2 @ cov1) + diff @ inv2 @ diff - k
                  + np.linalg.slogdet(cov2)[1] - np.linalg.slogdet(cov1)[1])


def _spd(rng, k):
    a = rng.normal(size=(k, k))
    return a @ a.T + k * np.eye(k)


def test_univariate_scalars_are_0d():
    value = klcli.gaussian_kl(0.3, -1.2, sigma1=0.7, sigma2=1.9)
    assert type(value) is np.float64
    assert value == pytest.approx(_univariate(0.3, 0.7, -1.2, 1.9), rel=1e-13)
    assert klcli.gaussian_kl(0.3, -1.2, var1=0.49, var2=1.9**2) == pytest.approx(value, rel=1e-13)
    assert klcli.gaussian_kl(0.3, -1.2, logvar1=np.log(0.49), logvar2=np.log(1.9**2)) == pytest.approx(value,
                                                                                                          rel=1e-13)
    assert klcli.gaussian_kl(0.3, -1.2, sigma1=0.7, sigma2=1.9, direction="reverse") == pytest.approx(
        _univariate(-1.2, 1.9, 0.3, 0.7), rel=1e-13)
    assert klcli.gaussian_kl(0.0, 1.0) == pytest.approx(0.5)  # unit variances when no spread is given
    assert klcli.gaussian_kl(0.0, 1.0, base=2) == pytest.approx(0.5 / np.log(2))


def test_diagonal_sums_over_dimensions():
    rng = np.random.default_rng(21)
    mu1, mu2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    s1, s2 = rng.uniform(0.5, 2, size=(5, 3)), rng.uniform(0.5, 2, size=(5, 3))
    expected = _univariate(mu1, s1, mu2, s2).sum(axis=1)
    result = klcli.gaussian_kl(mu1, mu2, sigma1=s1, sigma2=s2)
    assert result.shape == (5,)
    np.testing.assert_allclose(result, expected, rtol=1e-12)
    one = klcli.gaussian_kl(mu1[0], mu2[0], sigma1=s1[0], sigma2=s2[0])
    assert np.ndim(one) == 0 and one == pytest.approx(expected[0], rel=1e-12)
    # a shared second Gaussian broadcast against every row
    np.testing.assert_allclose(klcli.gaussian_kl(mu1, mu2[0], sigma1=s1, sigma2=s2[0]),
                               _univariate(mu1, s1, mu2[0], s2[0]).sum(axis=1), rtol=1e-12)


def test_full_covariance():
    rng = np.random.default_rng(22)
    k = 4
    covs1, covs2 = np.stack([_spd(rng, k) for _ in range(3)]), np.stack([_spd(rng, k) for _ in range(3)])
    mu1, mu2 = rng.normal(size=(3, k)), rng.normal(size=(3, k))
    result = klcli.gaussian_kl(mu1, mu2, cov1=covs1, cov2=covs2)
    np.testing.assert_allclose(result, [_full(mu1[i], covs1[i], mu2[i], covs2[i]) for i in range(3)], rtol=1e-10)
    one = klcli.gaussian_kl(mu1[0], mu2[0], cov1=covs1[0], cov2=covs2[0])
    assert np.ndim(one) == 0 and one == pytest.approx(_full(mu1[0], covs1[0], mu2[0], covs2[0]), rel=1e-10)
    # a full covariance against a diagonal one
    s2 = rng.uniform(0.5, 2, size=k)
    assert klcli.gaussian_kl(mu1[0], mu2[0], cov1=covs1[0], sigma2=s2) == pytest.approx(
        _full(mu1[0], covs1[0], mu2[0], np.diag(s2**2)), rel=1e-10)
    assert klcli.gaussian_kl(mu1[0], mu2[0], cov1=covs1[0], cov2=covs2[0], direction="reverse") == pytest.approx(
        _full(mu2[0], covs2[0], mu1[0], covs1[0]), rel=1e-10)


@pytest.mark.parametrize("options,text", [
    ({"sigma1": 1.0, "var1": 1.0}, "sigma1 and var1 both set the spread"),
    ({"sigma2": -1.0}, "sigma2: row 0 has -1.0"),
    ({"cov1": [[1.0, 2.0], [0.0, 1.0]]}, "cov1: matrix 0 is not symmetric"),
    ({"cov1": [[1.0, 2.0], [2.0, 1.0]]}, "cov1: matrix 0 is not positive definite"),
    ({"cov1": [1.0, 2.0]}, "a covariance is (k, k)"),
    ({"sigma1": [1.0, 2.0, 3.0]}, "do not broadcast"),
    ({"direction": "both"}, "direction='both'"),
])
def test_errors_are_value_errors(options, text):
    with pytest.raises(ValueError) as info:
        klcli.gaussian_kl([0.0, 0.0], [0.0, 0.0], **options)
    assert text in str(info.value) and "--" not in str(info.value)


@pytest.mark.parametrize("k", [3, 20])
def test_nearly_equal_full_covariances_keep_their_digits(k):
    """Σ2 = Σ1 + 2⁻³⁰·A (both exact in binary): a KL of ~1e-18, to 1e-9 relative against 50-digit mpmath.

    The written-out formula loses every digit here (tr(Σ2⁻¹Σ1) ≈ k); the CLI's eigenvalue form keeps them, and
    the Python API must too (it once rebuilt the covariances from their Cholesky factors, losing ~1e-7).
    """
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(7)
    cov1 = np.round(_spd(rng, k) * 64) / 64
    cov2 = cov1 + np.round(_spd(rng, k) * 64) / 64 * 2.0**-30  # dyadic entries: the sum is exact
    with mpmath.workdps(50):
        s1, s2 = mpmath.matrix(cov1.tolist()), mpmath.matrix(cov2.tolist())
        ratio = s2**-1 * s1
        exact = float((sum(ratio[i, i] for i in range(k)) - k - mpmath.log(mpmath.det(ratio))) / 2)
    mean = np.zeros(k)
    assert klcli.gaussian_kl(mean, mean, cov1=cov1, cov2=cov2) == pytest.approx(exact, rel=1e-9, abs=0)
    # A diagonal side against a full one: Σ1 = diag(v) given as variances. A diagonal side is held as log-variances
    # (as the CLI holds it), and exp(log v) is v to an ulp, 2⁻²³ of the 2⁻³⁰ difference: 1e-6 relative.
    variances = np.diag(cov1).copy()
    diagonal2 = np.diag(variances) + np.diag(np.diag(cov2 - cov1))
    with mpmath.workdps(50):
        exact = float(sum((mpmath.mpf(v) / mpmath.mpf(w) - 1 - mpmath.log(mpmath.mpf(v) / mpmath.mpf(w))) / 2
                          for v, w in zip(variances, np.diag(diagonal2))))
    assert klcli.gaussian_kl(mean, mean, var1=variances, cov2=diagonal2) == pytest.approx(exact, rel=1e-6, abs=0)
