"""Closed-form KL divergences between Gaussians, one value per row, in nats.

Each form is a small function with its terms named, in the manner of
``torch/distributions/kl.py``. Variances enter as log-variances as well, so
that log(σ2²/σ1²) is a difference of logs rather than a log of a rounded ratio,
and ``expm1(a) − a`` keeps nearly equal variances from cancelling to noise.
"""

from __future__ import annotations

import numpy as np

from klcli.errors import DistributionError


def kl_diagonal(mu1, logvar1, mu2, logvar2) -> np.ndarray:
    """D(N(μ1, diag σ1²) ‖ N(μ2, diag σ2²)), summed over the last axis (dimensions).

    Per dimension (univariate; e.g. Bishop, PRML §1.6, or torch's
    ``_kl_normal_normal``):
    log(σ2/σ1) + (σ1² + (μ1−μ2)²)/(2σ2²) − ½ = ½[(e^a − 1 − a) + (μ1−μ2)²/σ2²],
    with a = log σ1² − log σ2².

    Examples
    --------
    >>> import math
    >>> # SPEC's formula for N(0,1) ‖ N(1,2²): log 2 + (1 + 1)/8 − ½
    >>> float(kl_diagonal(0.0, 0.0, 1.0, math.log(4.0))[()]) == math.log(2) + 2 / 8 - 0.5
    True
    """
    mu1, logvar1, mu2, logvar2 = (np.asarray(x, dtype=np.float64) for x in (mu1, logvar1, mu2, logvar2))
    log_ratio = logvar1 - logvar2
    variance_term = np.expm1(log_ratio) - log_ratio
    mean_term = (mu1 - mu2) ** 2 * np.exp(-logvar2)
    return 0.5 * np.sum(variance_term + mean_term, axis=-1)


def kl_standard_normal(mu, logvar) -> np.ndarray:
    """The VAE regulariser D(N(μ, diag e^logvar) ‖ N(0, I)) = −½ Σ (1 + logvar − μ² − e^logvar).

    Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix B.

    Examples
    --------
    >>> kl_standard_normal([[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]).tolist()
    [0.0, 0.5]
    """
    mu, logvar = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    return 0.5 * np.sum(mu**2 + np.expm1(logvar) - logvar, axis=-1)


def _forward_substitution(lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve L·X = B for lower-triangular L, batched over leading axes (no inverse formed)."""
    size = lower.shape[-1]
    solution = np.zeros(np.broadcast_shapes(lower.shape[:-2], rhs.shape[:-2]) + rhs.shape[-2:])
    for i in range(size):
        known = np.einsum("...j,...jc->...c", lower[..., i, :i], solution[..., :i, :])
        solution[..., i, :] = (rhs[..., i, :] - known) / lower[..., i, i, None]
    return solution


def finite_means(values, *, label: str) -> np.ndarray:
    """Means as float64 (n, k); NaN or ±inf is an error naming the row and dimension.

    Examples
    --------
    >>> finite_means(np.array([[0.0, 1.5]]), label="--mu1").tolist()
    [[0.0, 1.5]]
    """
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    bad = ~np.isfinite(flat)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DistributionError(f"{label}: row {row} has {float(flat[row, column])!r} at dimension {column}; "
                                "a mean must be a finite number")
    return values


def cholesky(cov: np.ndarray, *, label: str) -> np.ndarray:
    """Lower Cholesky factors of a batch (n, k, k) of covariances, checked.

    Raises
    ------
    DistributionError
        A matrix that is not symmetric or not positive definite, naming it.
    """
    cov = np.asarray(cov, dtype=np.float64)
    bad = ~np.isfinite(cov)
    if bad.any():  # NaN passes the symmetry test below (every comparison with it is False)
        row, i, j = np.argwhere(bad)[0]
        raise DistributionError(f"{label}: matrix {row} has {float(cov[row, i, j])!r} at [{i}, {j}]; "
                                "a covariance must hold finite numbers")
    asymmetry = np.abs(cov - np.swapaxes(cov, -1, -2)).max(axis=(-1, -2))
    scale = np.abs(cov).max(axis=(-1, -2))
    bad = np.flatnonzero(asymmetry > 1e-10 * np.maximum(scale, 1e-300))
    if bad.size:
        row = int(bad[0])
        raise DistributionError(f"{label}: matrix {row} is not symmetric (largest |Σ − Σᵀ| is "
                                f"{float(asymmetry[row]):.3g}); a covariance must be symmetric")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        for row in range(cov.shape[0]):
            try:
                np.linalg.cholesky(cov[row])
            except np.linalg.LinAlgError:
                raise DistributionError(f"{label}: matrix {row} is not positive definite; a covariance needs "
                                        "positive eigenvalues") from None
        raise


def kl_full(mu1, chol1, mu2, chol2, cov1=None, cov2=None) -> np.ndarray:
    """D(N(μ1, Σ1) ‖ N(μ2, Σ2)) from Cholesky factors Σ = L·Lᵀ (and the covariances, if given), per row.

    ½[tr(Σ2⁻¹Σ1) + (μ2−μ1)ᵀΣ2⁻¹(μ2−μ1) − k + log det Σ2 − log det Σ1] is
    ½[Σ (λ − 1 − log λ) + ‖L2⁻¹(μ2−μ1)‖²] over the eigenvalues λ of Σ2⁻¹Σ1.
    Summing the terms of that formula as written cancels: for nearly equal
    covariances tr(Σ2⁻¹Σ1) ≈ k and the log-determinants agree to most of their
    digits (Σ2 = Σ1·(1+1e-6), k = 500: 1.2e-4 relative error). Instead
    λ − 1 are taken directly as the eigenvalues of the symmetric matrix
    L2⁻¹(Σ1 − Σ2)L2⁻ᵀ — the difference of the covariances as given is formed
    first — and each term λ − 1 − log λ = μ − log1p(μ) by a series where μ is
    small, so nearly equal Gaussians give their true, tiny divergence. Rows
    with an eigenvalue far from 1 (|λ − 1| ≥ ½), whose KL is not small, use
    the written-out formula, which keeps a tiny λ to full relative precision.
    ``cov1``/``cov2`` default to L·Lᵀ.

    Examples
    --------
    >>> eye = np.eye(2)[None]
    >>> float(kl_full(np.zeros((1, 2)), eye, np.ones((1, 2)), eye)[0])  # ½‖μ1 − μ2‖²
    1.0
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    chol1, chol2 = np.asarray(chol1, dtype=np.float64), np.asarray(chol2, dtype=np.float64)
    cov1 = chol1 @ np.swapaxes(chol1, -1, -2) if cov1 is None else np.asarray(cov1, dtype=np.float64)
    cov2 = chol2 @ np.swapaxes(chol2, -1, -2) if cov2 is None else np.asarray(cov2, dtype=np.float64)
    difference = np.broadcast_to(cov1 - cov2, np.broadcast_shapes(cov1.shape, cov2.shape, chol2.shape))
    # L2⁻¹ D L2⁻ᵀ = L2⁻¹ (L2⁻¹ D)ᵀ for symmetric D; symmetrised against rounding before the eigenvalues.
    half = _forward_substitution(chol2, difference)
    whitened = _forward_substitution(chol2, np.swapaxes(half, -1, -2))
    whitened = 0.5 * (whitened + np.swapaxes(whitened, -1, -2))
    excess = np.linalg.eigvalsh(whitened)  # λ − 1
    offset = _forward_substitution(chol2, (mu2 - mu1)[..., None])[..., 0]
    mahalanobis = np.sum(offset**2, axis=-1)
    variance_term = np.sum(_excess_minus_log1p(excess), axis=-1)
    # λ far from 1 (|λ − 1| ≥ ½) is better taken from the factors: λ − 1 holds a tiny λ only to ~1e-16 absolute,
    # while log det Σ = 2 Σ log diag L keeps it to full relative precision. Such a row's KL is ≥ 0.09 nats, so the
    # written-out formula loses nothing to cancellation there.
    far = np.max(np.abs(excess), axis=-1) >= 0.5
    if np.any(far):
        trace = np.sum(_forward_substitution(chol2, chol1) ** 2, axis=(-1, -2))
        log_det_2 = 2.0 * np.sum(np.log(np.diagonal(chol2, axis1=-2, axis2=-1)), axis=-1)
        log_det_1 = 2.0 * np.sum(np.log(np.diagonal(chol1, axis1=-2, axis2=-1)), axis=-1)
        variance_term = np.where(far, trace - chol1.shape[-1] + log_det_2 - log_det_1, variance_term)
    # ≥ 0 exactly (every term is); rounding of equal Gaussians cannot make it negative.
    return np.maximum(0.5 * (variance_term + mahalanobis), 0.0)


def _excess_minus_log1p(u: np.ndarray) -> np.ndarray:
    """u − log1p(u) ≥ 0 for u > −1, without cancellation where |u| is small (a series, Σ (−1)ⁿuⁿ/n from n = 2).

    Examples
    --------
    >>> _excess_minus_log1p(np.array([1e-8, 1.0])).tolist()  # u²/2 − u³/3 + …, and 1 − log 2
    [4.999999966666667e-17, 0.3068528194400547]
    """
    u = np.array(u, dtype=np.float64, ndmin=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = u - np.log1p(u)
    small = np.abs(u) < 0.05
    if np.any(small):
        v = u[small]
        series = np.zeros_like(v)
        for n in range(14, 1, -1):  # 0.05¹⁵/15 < 1e-18 of the first term's 0.05²/2
            series = v * (((-1.0) ** n) / n + series)
        result[small] = v * series
    return np.maximum(result, 0.0)


def condition_number(cov: np.ndarray) -> np.ndarray:
    """The 2-norm condition number of each covariance (ratio of its extreme eigenvalues).

    Examples
    --------
    >>> condition_number(np.diag([1.0, 1e-4])[None]).tolist()
    [10000.0]
    """
    eigenvalues = np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64))
    with np.errstate(divide="ignore"):
        return np.where(eigenvalues[..., 0] > 0, eigenvalues[..., -1] / eigenvalues[..., 0], np.inf)


# A covariance this ill-conditioned costs about log10(condition) of float64's ~16 digits (issue 14).
ILL_CONDITIONED = 1e10


SCALES = ("sigma", "var", "logvar")


def log_variance(values, scale: str, *, label: str) -> np.ndarray:
    """σ, σ² or log σ² as log σ²; a non-positive σ or σ² is an error naming the row.

    Examples
    --------
    >>> log_variance(np.array([[1.0, np.e]]), "sigma", label="--sigma1").tolist()
    [[0.0, 2.0]]
    """
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) if scale == "logvar" else ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row, column = np.argwhere(bad.reshape(values.shape[0], -1))[0]
        what = {"sigma": "a standard deviation must be > 0", "var": "a variance must be > 0",
                "logvar": "a log-variance must be finite"}[scale]
        raise DistributionError(f"{label}: row {row} has {float(values.reshape(values.shape[0], -1)[row, column])!r} "
                                f"at dimension {column}; {what}")
    if scale == "sigma":
        return 2.0 * np.log(values)
    if scale == "var":
        return np.log(values)
    return values
