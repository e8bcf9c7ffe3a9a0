"""k-nearest-neighbour estimators of KL divergence and differential entropy from samples (continuous densities).

- Wang, Kulkarni & Verdú (2009), "Divergence estimation for multidimensional densities via k-nearest-neighbor
  distances": D̂(P‖Q) = (d/n) Σ log(ν_k(i)/ρ_k(i)) + log(m/(n−1)), with ρ_k(i) the Euclidean distance from
  P's point i to its k-th nearest other point of P and ν_k(i) to its k-th nearest point of Q.
- Kozachenko & Leonenko (1987), as Kraskov et al. (2004) write it: Ĥ = ψ(n) − ψ(k) + log V_d +
  (d/n) Σ log ε_k(i), ε_k(i) the distance to the k-th nearest other point, V_d = π^{d/2}/Γ(d/2+1) the volume
  of the unit ball.

Both assume i.i.d. samples of continuous densities. Both are consistent for any fixed k; a larger k lowers
the variance and raises the bias (the density is assumed constant over a wider ball). Zero distances (tied
points) have no logarithm: they are an error, raised by the caller with the point's index.

Neighbours are found by ``scipy.spatial.cKDTree`` (imported here only, so scipy is needed only for samples).
The standard error is the spread of the estimate over ``B`` disjoint random subsamples of each set (fixed
seed), scaled by √(subsample size / sample size) = 1/√B: the estimators' variance falls as 1/n.
"""

from __future__ import annotations

import math

import numpy as np

SUBSAMPLES = 10  # B of the standard error
SEED = 0


class TiedPoints(ValueError):
    """A zero neighbour distance: ``which`` names the sets, ``index`` the first point of P (or X) it hit."""

    def __init__(self, which: str, index: int):
        super().__init__(f"{which}: point {index}")
        self.which, self.index = which, index


def _tree(points: np.ndarray):
    from scipy.spatial import cKDTree

    return cKDTree(points)


def _kth(tree, points: np.ndarray, k: int) -> np.ndarray:
    distances, _ = tree.query(points, k=[k])
    return distances[:, 0]


def _logs(distances: np.ndarray, which: str) -> np.ndarray:
    zero = np.flatnonzero(~(distances > 0))
    if zero.size:
        raise TiedPoints(which, int(zero[0]))
    return np.log(distances)


def log_unit_ball(d: int) -> float:
    """log V_d, the volume of the Euclidean unit ball in d dimensions.

    Examples
    --------
    >>> round(math.exp(log_unit_ball(2)), 12)  # π
    3.14159265359
    """
    return d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)


def kl_divergence(p: np.ndarray, q: np.ndarray, k: int) -> float:
    """The Wang–Kulkarni–Verdú estimate of D(P‖Q), in nats, from (n, d) and (m, d) samples.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> same = kl_divergence(rng.normal(size=(2000, 1)), rng.normal(size=(2000, 1)), 5)
    >>> abs(same) < 0.05
    True
    """
    n, d = p.shape
    m = q.shape[0]
    rho = _logs(_kth(_tree(p), p, k + 1), "P has tied points (two equal)")  # the first neighbour is the point
    nu = _logs(_kth(_tree(q), p, k), "P and Q share points")
    return float(d * np.mean(nu - rho) + math.log(m / (n - 1)))


def entropy(x: np.ndarray, k: int) -> float:
    """The Kozachenko–Leonenko estimate of the differential entropy h(X), in nats, from (n, d) samples.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(4000, 1))
    >>> abs(entropy(x, 5) - 0.5 * math.log(2 * math.pi * math.e)) < 0.05
    True
    """
    from scipy.special import digamma

    n, d = x.shape
    eps = _logs(_kth(_tree(x), x, k + 1), "X has tied points (two equal)")
    return float(digamma(n) - digamma(k) + log_unit_ball(d) + d * np.mean(eps))


def subsample_stderr(estimate, sets: list[np.ndarray], k: int, blocks: int = SUBSAMPLES) -> tuple[float | None, int]:
    """The standard error of ``estimate(*sets, k)`` and the number of subsamples it came from.

    Each set is shuffled (fixed seed) and cut into ``blocks`` disjoint parts; the estimate on each part's
    tuple has spread s, and the full sample's standard error is s·√(1/blocks). Fewer parts are used where a
    part would hold too few points for k neighbours (at least 2k + 2 each); None below two parts.
    """
    rng = np.random.default_rng(SEED)
    blocks = min(blocks, *(len(points) // (2 * k + 2) for points in sets))
    if blocks < 2:
        return None, blocks
    parts = [np.array_split(points[rng.permutation(len(points))], blocks) for points in sets]
    values = np.array([estimate(*(part[b] for part in parts), k) for b in range(blocks)])
    return float(np.std(values, ddof=1) / math.sqrt(blocks)), blocks
