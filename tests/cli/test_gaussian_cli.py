"""klcli gaussian as users call it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SAMPLES


def test_numbers_and_the_seed_formula(cli):
    got = float(cli("gaussian", "--mu1", "0", "--sigma1", "1", "--mu2", "1", "--sigma2", "2", "-q").out)
    assert got == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-15)
    same = [float(cli("gaussian", "--mu1", "0", *scale, "--mu2", "1", "--sigma2", "2", "-q").out)
            for scale in (("--var1", "1"), ("--logvar1", "0"))]
    assert same == pytest.approx([got, got], rel=1e-15)
    assert float(cli("gaussian", "--mu1", "-1", "-q").out) == 0.5  # against N(0, 1) by default


def test_direction_both_and_bits(cli):
    doc = cli("gaussian", "--mu1", "0", "--sigma1", "1", "--mu2", "1", "--sigma2", "2", "--direction", "both",
              "--bits", "--json").json()
    forward = (math.log(2) + 2 / 8 - 0.5) / math.log(2)
    backward = (math.log(0.5) + (4 + 1) / 2 - 0.5) / math.log(2)
    assert doc["value"] == pytest.approx(forward, rel=1e-14)
    assert doc["kl_reverse"]["mean"] == pytest.approx(backward, rel=1e-14)
    assert doc["kl_symmetric"]["mean"] == pytest.approx(forward + backward, rel=1e-14)
    assert doc["form"] == "univariate"


def test_table_of_parameters(cli):
    doc = cli("gaussian", SAMPLES / "gaussians.csv", "--json", "--per-row").json()
    rows = np.loadtxt(SAMPLES / "gaussians.csv", delimiter=",", skiprows=1)
    expected = [math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5 for m1, s1, m2, s2 in rows]
    np.testing.assert_allclose(doc["per_row"]["kl"], expected, rtol=1e-13, atol=1e-15)
    assert doc["rows"] == 4


def test_diagonal_rows_full_and_mixed(cli, tmp_path):
    rng = np.random.default_rng(8)
    mu1, mu2 = rng.normal(size=(6, 3)), rng.normal(size=3)
    sigma1 = rng.uniform(0.5, 2, size=(6, 3))
    np.save(tmp_path / "mu1.npy", mu1)
    np.save(tmp_path / "s1.npy", sigma1)
    doc = cli("gaussian", "--mu1", tmp_path / "mu1.npy", "--sigma1", tmp_path / "s1.npy",
              "--mu2", ",".join(repr(float(m)) for m in mu2), "--json", "--per-row").json()
    expected = np.sum(np.log(1 / sigma1) + (sigma1**2 + (mu1 - mu2) ** 2) / 2 - 0.5, axis=1)
    np.testing.assert_allclose(doc["per_row"]["kl"], expected, rtol=1e-12)
    assert doc["form"] == "diagonal" and doc["dimensions"] == 3 and doc["rows"] == 6
    cov1, cov2 = np.load(SAMPLES / "cov1.npy"), np.load(SAMPLES / "cov2.npy")
    full = float(cli("gaussian", "--mu1", "0,0,0", "--cov1", SAMPLES / "cov1.npy", "--mu2", "1,0,0",
                     "--cov2", SAMPLES / "cov2.npy", "-q").out)
    inverse = np.linalg.inv(cov2)
    diff = np.array([1.0, 0, 0])
    by_hand = 0.5 * (np.trace(inverse @ cov1) + diff @ inverse @ diff - 3
                     + np.log(np.linalg.det(cov2)) - np.log(np.linalg.det(cov1)))
    assert full == pytest.approx(by_hand, rel=1e-12)
    mixed = float(cli("gaussian", "--cov1", SAMPLES / "cov1.npy", "--sigma2", "1,2,1", "-q").out)
    diag2 = np.diag([1.0, 4.0, 1.0])
    by_hand = 0.5 * (np.trace(np.linalg.inv(diag2) @ cov1) - 3 + np.log(4.0) - np.log(np.linalg.det(cov1)))
    assert mixed == pytest.approx(by_hand, rel=1e-12)


def test_vae(cli):
    archive = np.load(SAMPLES / "vae.npz")
    mu, logvar = archive["mu"], archive["logvar"]
    doc = cli("gaussian", "--vae", "--mu", f"{SAMPLES / 'vae.npz'}:mu", "--logvar", f"{SAMPLES / 'vae.npz'}:logvar",
              "--json", "--per-row").json()
    expected = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), axis=1)
    np.testing.assert_allclose(doc["per_row"]["kl"], expected, rtol=1e-12)
    assert doc["value"] == pytest.approx(expected.mean(), rel=1e-12) and doc["form"] == "vae"


@pytest.mark.parametrize(("args", "message"), [
    (("--sigma1", "0"), "--sigma1 (P): row 0 has 0.0 at dimension 0; a standard deviation must be > 0"),
    (("--var2", "1,-1"), "--var2 (Q): row 0 has -1.0 at dimension 1; a variance must be > 0"),
    (("--sigma1", "1", "--var1", "2"), "--sigma1 and --var1 both set the spread of the same Gaussian; give one of "
                                       "them"),
    (("--cov1", "1,2;2,1"), "--cov1 (P): matrix 0 is not positive definite; a covariance needs positive eigenvalues"),
    (("--cov2", "1,2;3,1"), "--cov2 (Q): matrix 0 is not symmetric (largest |Σ − Σᵀ| is 1); a covariance must be "
                            "symmetric"),
    (("--mu1", "0,0,0", "--cov1", "1,0;0,1"), "--cov1 has 2 dimensions but --mu1 has 3; parameters must agree (or "
                                              "have 1, to apply to all)"),
    (("--mu1", "0;1;2", "--mu2", "0;1"), "--mu2 has 2 rows but --mu1 has 3; parameters must agree (or have 1, to "
                                         "apply to all)"),
    (("--vae", "--mu", "0"), "--vae needs --mu MU and --logvar LOGVAR (the encoder's outputs, (n, k))"),
])
def test_errors(cli, args, message):
    run = cli("gaussian", *args)
    assert (run.code, run.out) == (2, "")
    assert run.err == f"klcli: error: {message}\n"


def test_ill_conditioned_covariance_is_reported_with_its_condition_number(cli, tmp_path):
    """Issue 14 item 13: condition number ≥ 1e10 gives the figure and a note naming it and the digits it costs."""
    cov = np.diag([1.0, 1e-12])
    np.save(tmp_path / "c.npy", cov)
    np.save(tmp_path / "fine.npy", np.eye(2))
    run = cli("gaussian", "--mu1", "0,0", "--cov1", tmp_path / "c.npy", "--mu2", "1,0", "--cov2",
              tmp_path / "fine.npy", "--json")
    assert run.code == 0
    doc = run.json()
    exact = 0.5 * (1.0 + 1e-12 + 1.0 - 2 + 0.0 - np.log(1e-12))  # tr + Mahalanobis − k + log det Σ2 − log det Σ1
    assert doc["value"] == pytest.approx(exact, rel=1e-12)
    note = [n for n in doc["notes"] if "condition number" in n]
    assert len(note) == 1 and "--cov1" in note[0] and "1e+12" in note[0] and "12 of" in note[0]
    run = cli("gaussian", "--mu1", "0,0", "--cov1", tmp_path / "fine.npy", "--mu2", "1,0", "--cov2",
              tmp_path / "fine.npy", "--json")
    assert not [n for n in run.json()["notes"] if "condition number" in n]
