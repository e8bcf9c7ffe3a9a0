"""gaussian --fit P Q: the closed-form KL between Gaussians fitted to samples, against numpy and the formula."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _closed_form(mu1, cov1, mu2, cov2):
    """½[tr(Σ2⁻¹Σ1) + (μ2−μ1)ᵀΣ2⁻¹(μ2−μ1) − k + log det Σ2 − log det Σ1], as SPEC writes it."""
    inverse = np.linalg.inv(cov2)
    diff = mu2 - mu1
    return 0.5 * (np.trace(inverse @ cov1) + diff @ inverse @ diff - len(mu1)
                  + np.linalg.slogdet(cov2)[1] - np.linalg.slogdet(cov1)[1])


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(7)
    p = rng.normal(size=(400, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.2, 0.5], [0.0, 0.0, 0.8]])
    q = rng.standard_t(5, size=(300, 3)) + [0.5, -0.2, 0.1]  # not Gaussian: the fit and the k-NN estimate differ
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    return tmp_path, p, q


def test_full_fit_against_numpy(cli, samples):
    where, p, q = samples
    doc = cli("gaussian", "--fit", where / "p.npy", where / "q.npy", "--direction", "both", "--json").json()
    mu1, mu2, cov1, cov2 = p.mean(axis=0), q.mean(axis=0), np.cov(p, rowvar=False), np.cov(q, rowvar=False)
    assert doc["value"] == pytest.approx(_closed_form(mu1, cov1, mu2, cov2), rel=1e-12)
    assert doc["kl_reverse"]["mean"] == pytest.approx(_closed_form(mu2, cov2, mu1, cov1), rel=1e-12)
    assert (doc["form"], doc["dimensions"], doc["samples"]) == ("fit-full", 3, [400, 300])


def test_diagonal_fit_against_numpy(cli, samples):
    where, p, q = samples
    doc = cli("gaussian", "--fit", where / "p.npy", where / "q.npy", "--diagonal", "--bits", "--json").json()
    expected = _closed_form(p.mean(axis=0), np.diag(p.var(axis=0, ddof=1)), q.mean(axis=0),
                            np.diag(q.var(axis=0, ddof=1)))
    assert doc["value"] == pytest.approx(expected / math.log(2), rel=1e-12)
    assert doc["form"] == "fit-diagonal"


def test_knn_beside_the_fit(cli, samples):
    pytest.importorskip("scipy.spatial")
    where, _, _ = samples
    doc = cli("gaussian", "--fit", where / "p.npy", where / "q.npy", "--knn", "--k", "3", "--bits", "--json").json()
    alone = cli("kl", "--samples", where / "p.npy", where / "q.npy", "--k", "3", "--bits", "--json").json()
    assert doc["knn"] == {"value": alone["value"], "stderr": alone["stderr"], "stderr_subsamples": 10,
                          "estimator": "wang-kulkarni-verdu", "k": 3}


def test_one_dimension(cli, tmp_path):
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=200), rng.normal(2.0, 3.0, size=150)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    doc = cli("gaussian", "--fit", tmp_path / "p.npy", tmp_path / "q.npy", "--json").json()
    s1, s2 = p.std(ddof=1), q.std(ddof=1)
    expected = math.log(s2 / s1) + (s1**2 + (p.mean() - q.mean()) ** 2) / (2 * s2**2) - 0.5  # SPEC's univariate form
    assert doc["value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("args", "message"), [
    (["--diagonal"], "--diagonal goes with --fit P Q"),
    (["--fit", "1,2", "3,4", "--mu1", "0"], "--fit P Q fits its Gaussians to samples; it takes no --mu1"),
])
def test_usage(cli, args, message):
    run = cli("gaussian", *args)
    assert run.code == 2 and message in run.err


def test_too_few_points_for_a_covariance(cli, tmp_path):
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(3, 5)))  # 3 points in 5 dimensions
    run = cli("gaussian", "--fit", tmp_path / "p.npy", tmp_path / "p.npy")
    assert run.code == 2 and "fitted covariance" in run.err and "not positive definite" in run.err
