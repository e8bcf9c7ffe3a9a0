"""Gaussian closed forms: literal values, Monte Carlo, consistency between forms, and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from klcli.core.gaussian import cholesky, kl_diagonal, kl_full, kl_standard_normal


def _univariate(mu1, s1, mu2, s2):
    """SPEC §1's formula, written out."""
    return math.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5


@pytest.mark.parametrize(("mu1", "s1", "mu2", "s2"), [(0, 1, 1, 2), (0.5, 1, 0, 1), (-1, 0.5, 1, 1.5), (3, 2, 3, 2)])
def test_univariate_by_hand(mu1, s1, mu2, s2):
    got = kl_diagonal([[mu1]], [[2 * math.log(s1)]], [[mu2]], [[2 * math.log(s2)]])[0]
    assert got == pytest.approx(_univariate(mu1, s1, mu2, s2), rel=1e-14, abs=1e-15)
    assert kl_diagonal([[0.0]], [[0.0]], [[1.0]], [[math.log(4)]])[0] == pytest.approx(math.log(2) - 0.25, rel=1e-15)


def _random_spd(rng, k):
    a = rng.normal(size=(k, k))
    return a @ a.T + k * np.eye(k) * 0.5


def test_forms_agree():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    lv1, lv2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    diagonal = kl_diagonal(mu1, lv1, mu2, lv2)
    # diagonal with k dims = sum of univariate
    per_dim = [kl_diagonal(mu1[:, [d]], lv1[:, [d]], mu2[:, [d]], lv2[:, [d]]) for d in range(3)]
    np.testing.assert_allclose(diagonal, np.sum(per_dim, axis=0), rtol=1e-13)
    # full with diagonal covariances = diagonal
    chol1 = np.sqrt(np.exp(lv1))[:, :, None] * np.eye(3)
    chol2 = np.sqrt(np.exp(lv2))[:, :, None] * np.eye(3)
    np.testing.assert_allclose(kl_full(mu1, chol1, mu2, chol2), diagonal, rtol=1e-12)
    # full 1×1 = univariate
    one = kl_full(mu1[:, :1], chol1[:, :1, :1], mu2[:, :1], chol2[:, :1, :1])
    np.testing.assert_allclose(one, kl_diagonal(mu1[:, :1], lv1[:, :1], mu2[:, :1], lv2[:, :1]), rtol=1e-12)
    # VAE = diagonal against N(0, I)
    np.testing.assert_allclose(kl_standard_normal(mu1, lv1), kl_diagonal(mu1, lv1, 0.0, 0.0), rtol=1e-13)


def _log_normal_pdf(x, mu, cov):
    k = mu.size
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (x - mu).T)
    return -0.5 * np.sum(z**2, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * k * math.log(2 * math.pi)


@pytest.mark.parametrize("form", ["univariate", "diagonal", "full"])
def test_monte_carlo(form):
    """E_P[log p(x) − log q(x)] from 200 000 seeded samples, within 4 standard errors."""
    rng = np.random.default_rng({"univariate": 1, "diagonal": 2, "full": 3}[form])
    k = 1 if form == "univariate" else 3
    mu1, mu2 = rng.normal(size=k), rng.normal(size=k)
    if form == "full":
        cov1, cov2 = _random_spd(rng, k), _random_spd(rng, k)
    else:
        cov1, cov2 = np.diag(rng.uniform(0.5, 2, k)), np.diag(rng.uniform(0.5, 2, k))
    x = rng.multivariate_normal(mu1, cov1, size=200_000)
    samples = _log_normal_pdf(x, mu1, cov1) - _log_normal_pdf(x, mu2, cov2)
    estimate, stderr = samples.mean(), samples.std(ddof=1) / math.sqrt(samples.size)
    if form == "full":
        exact = kl_full(mu1[None], cholesky(cov1[None], label="P"), mu2[None], cholesky(cov2[None], label="Q"))[0]
    else:
        exact = kl_diagonal(mu1, np.log(np.diag(cov1)), mu2, np.log(np.diag(cov2)))
    assert abs(estimate - exact) < 4 * stderr


def test_against_torch():
    torch = pytest.importorskip("torch")
    dist = torch.distributions
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    cov1 = np.stack([_random_spd(rng, 3) for _ in range(5)])
    cov2 = np.stack([_random_spd(rng, 3) for _ in range(5)])
    expected = dist.kl_divergence(dist.MultivariateNormal(torch.from_numpy(mu1), torch.from_numpy(cov1)),
                                  dist.MultivariateNormal(torch.from_numpy(mu2), torch.from_numpy(cov2))).numpy()
    got = kl_full(mu1, cholesky(cov1, label="P"), mu2, cholesky(cov2, label="Q"))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    s1, s2 = rng.uniform(0.3, 2, size=(5, 3)), rng.uniform(0.3, 2, size=(5, 3))
    expected = dist.kl_divergence(dist.Normal(torch.from_numpy(mu1), torch.from_numpy(s1)),
                                  dist.Normal(torch.from_numpy(mu2), torch.from_numpy(s2))).sum(-1).numpy()
    np.testing.assert_allclose(kl_diagonal(mu1, 2 * np.log(s1), mu2, 2 * np.log(s2)), expected, rtol=1e-12)


def test_nearly_equal_gaussians_are_not_noise():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    s1, s2 = 1.0, 1.0 + 1e-9
    exact = float(mpmath.log(mpmath.mpf(s2) / s1) + mpmath.mpf(s1) ** 2 / (2 * mpmath.mpf(s2) ** 2) - mpmath.mpf(0.5))
    got = kl_diagonal([[0.0]], [[2 * math.log(s1)]], [[0.0]], [[2 * math.log(s2)]])[0]
    assert got == pytest.approx(exact, rel=1e-6, abs=1e-14)


def _mp_kl_full(mu1, cov1, mu2, cov2, dps=60):
    """½[tr(Σ2⁻¹Σ1) + Δμᵀ Σ2⁻¹ Δμ − k + log det Σ2 − log det Σ1] in mpmath at ``dps`` digits, of the floats given."""
    import mpmath

    with mpmath.workdps(dps):
        s1, s2 = mpmath.matrix(cov1.tolist()), mpmath.matrix(cov2.tolist())
        diff = mpmath.matrix((mu2 - mu1).tolist())
        inverse = s2**-1
        trace = sum((inverse * s1)[i, i] for i in range(s1.rows))
        mahalanobis = (diff.T * inverse * diff)[0, 0]
        value = (trace + mahalanobis - s1.rows + mpmath.log(mpmath.det(s2)) - mpmath.log(mpmath.det(s1))) / 2
        return float(value)


@pytest.mark.parametrize("relative", [1e-3, 1e-6, 1e-9, 1e-12])
def test_full_form_of_nearly_equal_gaussians_against_mpmath(relative):
    """Issue 14 item 13: Σ2 = Σ1 + a perturbation of relative size 1e-3 … 1e-12, k = 8, against 60-digit mpmath."""
    rng = np.random.default_rng(30)
    k = 8
    cov1 = _random_spd(rng, k)
    noise = rng.normal(size=(k, k)) * relative
    cov2 = cov1 + (noise + noise.T) * np.abs(cov1).max()
    mu1 = rng.normal(size=k)
    mu2 = mu1 + rng.normal(size=k) * relative
    got = kl_full(mu1[None], cholesky(cov1[None], label="P"), mu2[None], cholesky(cov2[None], label="Q"),
                  cov1[None], cov2[None])[0]
    exact = _mp_kl_full(mu1, cov1, mu2, cov2)
    assert got == pytest.approx(exact, rel=1e-9, abs=1e-14)


def test_full_form_with_a_scaled_covariance_at_k_500():
    """Σ2 = Σ1·(1 + 2⁻²⁰), exactly representable: λ = 1/(1 + δ) for every eigenvalue, so the KL is known in closed form.

    The diagonal form was exact; the full form was off by 1.3e-6 relative here (1.2e-4 with δ = 1e-6, k = 500).
    """
    import mpmath

    rng = np.random.default_rng(31)
    k, delta = 500, 2.0**-20
    a = rng.normal(size=(k, k))
    cov1 = np.round((a @ a.T / k + np.eye(k)) * 2**30) / 2**30  # 30 fraction bits: ·(1 + 2⁻²⁰) is exact
    cov2 = cov1 * (1 + delta)
    assert np.array_equal(cov2 - cov1, cov1 * delta)
    with mpmath.workdps(50):
        d = mpmath.mpf(delta)
        exact = float(k * ((1 / (1 + d) - 1) + mpmath.log1p(d)) / 2)
    zeros = np.zeros((1, k))
    got = kl_full(zeros, cholesky(cov1[None], label="P"), zeros, cholesky(cov2[None], label="Q"),
                  cov1[None], cov2[None])[0]
    assert got == pytest.approx(exact, rel=1e-9)
    # Without the covariances, Σ = L·Lᵀ is rebuilt from the factors: still no cancellation of tr − k + log det.
    rebuilt = kl_full(zeros, cholesky(cov1[None], label="P"), zeros, cholesky(cov2[None], label="Q"))[0]
    assert rebuilt == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("case", ["unrelated", "ill-conditioned"])
def test_full_form_of_distant_gaussians_against_mpmath(case):
    """Eigenvalues of Σ2⁻¹Σ1 far from 1 (and down to 1e-12): the figure is still within the contract."""
    rng = np.random.default_rng(32)
    k = 6
    cov1, cov2 = _random_spd(rng, k), _random_spd(rng, k)
    if case == "ill-conditioned":
        basis = np.linalg.qr(rng.normal(size=(k, k)))[0]
        cov1 = basis @ np.diag(np.logspace(0, -12, k)) @ basis.T
        cov1 = 0.5 * (cov1 + cov1.T)
    mu1, mu2 = rng.normal(size=k), rng.normal(size=k)
    got = kl_full(mu1[None], cholesky(cov1[None], label="P"), mu2[None], cholesky(cov2[None], label="Q"),
                  cov1[None], cov2[None])[0]
    # A condition number of 1e12 costs digits (Σ1's smallest eigenvalues are held to ~1e-16 absolute; measured
    # 1.2e-7 relative here): the CLI reports the figure with a note naming the condition number.
    assert got == pytest.approx(_mp_kl_full(mu1, cov1, mu2, cov2), rel=1e-9 if case == "unrelated" else 1e-6)
