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


def cholesky(cov: np.ndarray, *, label: str) -> np.ndarray:
    """Lower Cholesky factors of a batch (n, k, k) of covariances, checked.

    Raises
    ------
    DistributionError
        A matrix that is not symmetric or not positive definite, naming it.
    """
    cov = np.asarray(cov, dtype=np.float64)
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


def kl_full(mu1, chol1, mu2, chol2) -> np.ndarray:
    """D(N(μ1, Σ1) ‖ N(μ2, Σ2)) from Cholesky factors Σ = L·Lᵀ, per row.

    ½[tr(Σ2⁻¹Σ1) + (μ2−μ1)ᵀΣ2⁻¹(μ2−μ1) − k + log det Σ2 − log det Σ1], with
    tr(Σ2⁻¹Σ1) = ‖L2⁻¹L1‖²_F, the Mahalanobis term ‖L2⁻¹(μ2−μ1)‖², and
    log det Σ = 2 Σ log diag L (as torch's ``_kl_multivariatenormal_multivariatenormal``).

    Examples
    --------
    >>> import math
    >>> eye = np.eye(2)[None]
    >>> float(kl_full(np.zeros((1, 2)), eye, np.ones((1, 2)), eye)[0])  # ½‖μ1 − μ2‖²
    1.0
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    size = chol1.shape[-1]
    whitened = _forward_substitution(chol2, chol1)
    trace_term = np.sum(whitened**2, axis=(-1, -2))
    offset = _forward_substitution(chol2, (mu2 - mu1)[..., None])[..., 0]
    mahalanobis = np.sum(offset**2, axis=-1)
    log_det_2 = 2.0 * np.sum(np.log(np.diagonal(chol2, axis1=-2, axis2=-1)), axis=-1)
    log_det_1 = 2.0 * np.sum(np.log(np.diagonal(chol1, axis1=-2, axis2=-1)), axis=-1)
    # ≥ 0 exactly; equal Gaussians can round to −1e-16, which is no divergence at all.
    return np.maximum(0.5 * (trace_term + mahalanobis - size + log_det_2 - log_det_1), 0.0)


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
