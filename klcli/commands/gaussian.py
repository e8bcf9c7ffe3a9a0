"""``gaussian``: closed-form KL between Gaussians given by numbers, files or a table of parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from klcli.commands.common import by_direction, headline_of, summaries
from klcli.core.gaussian import (
    ILL_CONDITIONED,
    cholesky,
    condition_number,
    finite_means,
    kl_diagonal,
    kl_full,
    kl_standard_normal,
    log_variance,
)
from klcli.errors import InputError, ShapeError, UsageError
from klcli.io.operand import read_array, read_columns
from klcli.result import Result


@dataclass(frozen=True)
class Side:
    """One Gaussian's parameters as operands (None: not given). Index 1 is P, 2 is Q."""

    index: int
    mu: str | None = None
    sigma: str | None = None
    var: str | None = None
    logvar: str | None = None
    cov: str | None = None

    def scale(self) -> tuple[str, str] | None:
        given = [(name, getattr(self, name)) for name in ("sigma", "var", "logvar") if getattr(self, name) is not None]
        if self.cov is not None:
            given.append(("cov", self.cov))
        if len(given) > 1:
            names = " and ".join(f"--{name}{self.index}" for name, _ in given)
            raise UsageError(f"{names} both set the spread of the same Gaussian; give one of them")
        return given[0] if given else None


@dataclass
class _Params:
    """A side loaded: means (n, k), log-variances (n, k) or a Cholesky factor (n, k, k)."""

    mu: np.ndarray
    logvar: np.ndarray | None
    chol: np.ndarray | None
    spread_option: str = "--sigma"
    cov: np.ndarray | None = None  # as given, for the full form's Σ1 − Σ2


def _rows(array: np.ndarray, option: str) -> np.ndarray:
    """Numbers → (1, 1); a vector of k → (1, k); (n, k) stays."""
    if array.ndim <= 1:
        return array.reshape(1, -1)
    if array.ndim == 2:
        return array
    raise ShapeError(f"{option}: expected a number, a vector of k or an (n, k) array, got shape {array.shape}")


def _load(side: Side, inputs: list[dict]) -> tuple[_Params, dict[str, tuple]]:
    shapes = {}

    def load(option: str, operand: str) -> np.ndarray:
        array, source = read_array(operand, option)
        inputs.append(dict(source.describe(), kind=option.lstrip("-").rstrip("12")))
        shapes[option] = array.shape
        return array

    mu = (finite_means(_rows(load(f"--mu{side.index}", side.mu), f"--mu{side.index}"), label=f"--mu{side.index}")
          if side.mu is not None else np.zeros((1, 1)))
    scale = side.scale()
    if scale is None:
        return _Params(mu, np.zeros((1, 1)), None, f"--sigma{side.index}"), shapes
    name, operand = scale
    option = f"--{name}{side.index}"
    values = load(option, operand)
    if name != "cov":
        label = f"{option} ({'P' if side.index == 1 else 'Q'})"
        return _Params(mu, log_variance(_rows(values, option), name, label=label), None, option), shapes
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.shape[-1] != values.shape[-2]:
        raise ShapeError(f"{option}: a covariance is (k, k) or (n, k, k), got shape {values.shape}")
    chol = cholesky(values, label=f"{option} ({'P' if side.index == 1 else 'Q'})")
    return _Params(mu, None, chol, option, np.asarray(values, dtype=np.float64)), shapes


def _common_shape(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """The rows n and dimensions k all parameters broadcast to, or a ShapeError naming two that differ."""
    rows = {option: a.shape[0] for option, a in arrays.items()}
    dims = {option: a.shape[-1] for option, a in arrays.items()}
    n, k = max(rows.values()), max(dims.values())
    for sizes, what, total in ((rows, "rows", n), (dims, "dimensions", k)):
        odd = [option for option, size in sizes.items() if size not in (1, total)]
        if odd:
            widest = next(option for option, size in sizes.items() if size == total)
            raise ShapeError(f"{odd[0]} has {sizes[odd[0]]} {what} but {widest} has {total}; parameters must agree "
                             f"(or have 1, to apply to all)")
    return n, k


def _full_factor(params: _Params, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The Cholesky factor and the covariance of a side, (n, k, k) each."""
    if params.chol is not None:
        return np.broadcast_to(params.chol, (n, k, k)), np.broadcast_to(params.cov, (n, k, k))
    logvar = np.broadcast_to(params.logvar, (n, k))
    return np.exp(0.5 * logvar)[:, :, None] * np.eye(k), np.exp(logvar)[:, :, None] * np.eye(k)


def _diagonal_pair(first: _Params, second: _Params, n: int, k: int) -> tuple[np.ndarray, str]:
    mu1, mu2 = np.broadcast_to(first.mu, (n, k)), np.broadcast_to(second.mu, (n, k))
    logvar1, logvar2 = np.broadcast_to(first.logvar, (n, k)), np.broadcast_to(second.logvar, (n, k))
    pair = np.stack([kl_diagonal(mu1, logvar1, mu2, logvar2), kl_diagonal(mu2, logvar2, mu1, logvar1)])
    return pair, "univariate" if k == 1 else "diagonal"


def _full_pair(first: _Params, second: _Params, n: int, k: int) -> tuple[np.ndarray, str]:
    (chol1, cov1), (chol2, cov2) = _full_factor(first, n, k), _full_factor(second, n, k)
    mu1, mu2 = np.broadcast_to(first.mu, (n, k)), np.broadcast_to(second.mu, (n, k))
    return np.stack([kl_full(mu1, chol1, mu2, chol2, cov1, cov2), kl_full(mu2, chol2, mu1, chol1, cov2, cov1)]), "full"


# The closed forms by (P has a full covariance, Q has a full covariance); a diagonal side meets a full one
# as the diagonal matrix it is.
FORMS = {
    (False, False): _diagonal_pair,
    (False, True): _full_pair,
    (True, False): _full_pair,
    (True, True): _full_pair,
}


def _kl_rows(first: _Params, second: _Params) -> tuple[np.ndarray, str, int]:
    arrays = {"--mu1": first.mu, "--mu2": second.mu}
    for params in (first, second):
        arrays[params.spread_option] = params.chol[:, 0, :] if params.chol is not None else params.logvar
    n, k = _common_shape(arrays)
    for params in (first, second):
        if params.chol is not None and params.chol.shape[-1] != k:
            raise ShapeError(f"{params.spread_option} is {params.chol.shape[-1]}×{params.chol.shape[-1]} but the "
                             f"Gaussians have {k} dimensions")
    pair, form = FORMS[(first.chol is not None, second.chol is not None)](first, second, n, k)
    return pair, form, k


def _result(kl_pair: np.ndarray, direction: str, form: str, dims: int, inputs: list[dict],
            warnings: list[str] | None = None) -> Result:
    forward, backward = kl_pair[0], kl_pair[1]
    per_row = by_direction(direction, lambda: forward, lambda: backward)
    metrics = summaries(per_row)
    head, headline = headline_of(direction)
    return Result(
        command="gaussian",
        headline=headline,
        value=metrics[head]["mean"],
        rows=int(forward.shape[0]),
        inputs=inputs,
        summary=metrics[head],
        metrics=metrics,
        figures={"form": form, "dimensions": dims, "direction": direction},
        per_row=per_row,
        warnings=warnings or [],
        information=dict.fromkeys(per_row, 1.0),
    )


def _conditioning(params: _Params) -> list[str]:
    """A note for a covariance so ill-conditioned that the full form's figure loses digits to it."""
    if params.cov is None:
        return []
    condition = condition_number(params.cov)
    worst = int(np.argmax(condition))
    if not condition[worst] >= ILL_CONDITIONED:
        return []
    digits = min(16, int(math.log10(condition[worst])) if math.isfinite(condition[worst]) else 16)
    return [f"{params.spread_option}: matrix {worst} has condition number {float(condition[worst]):.3g}; the "
            f"full-covariance KL may have lost about {digits} of float64's 16 significant digits to it"]


def gaussian(first: Side, second: Side, *, direction: str = "forward") -> Result:
    """KL between P = N(μ1, ·) and Q = N(μ2, ·): univariate, diagonal or full covariance."""
    inputs: list[dict] = []
    params1, _ = _load(first, inputs)
    params2, _ = _load(second, inputs)
    kl_pair, form, dims = _kl_rows(params1, params2)
    return _result(kl_pair, direction, form, dims, inputs, _conditioning(params1) + _conditioning(params2))


def gaussian_table(operand, *, direction: str = "forward") -> Result:
    """One univariate KL per row of a table with columns mu1, mu2 and sigma/var/logvar 1 and 2."""
    columns, source = read_columns(operand, "PARAMS")
    params = []
    for index in (1, 2):
        spreads = [name for name in ("sigma", "var", "logvar") if f"{name}{index}" in columns]
        if len(spreads) != 1:
            found = ", ".join(columns) or "none"
            raise InputError(f"{source.label}: needs exactly one of the columns sigma{index}, var{index}, "
                             f"logvar{index} (mu{index} is 0 when absent); its columns are: {found}")
        label = f"{source.label}: column {spreads[0]}{index}"
        mu = finite_means(columns.get(f"mu{index}", np.zeros(1))[:, None], label=f"{source.label}: column mu{index}")
        log_var = log_variance(columns[f"{spreads[0]}{index}"][:, None], spreads[0], label=label)
        params.append(_Params(mu, log_var, None, f"{spreads[0]}{index}"))
    kl_pair, form, _ = _kl_rows(*params)
    return _result(kl_pair, direction, form, 1, [dict(source.describe(len(kl_pair[0])), kind="parameters")])


def vae(mu, logvar) -> Result:
    """The VAE term D(N(μ, diag e^logvar) ‖ N(0, I)) per row of (n, k) arrays."""
    inputs = []
    arrays = {}
    for option, operand in (("--mu", mu), ("--logvar", logvar)):
        array, source = read_array(operand, option)
        inputs.append(dict(source.describe(), kind=option.lstrip("-")))
        arrays[option] = _rows(array, option)
    n, k = _common_shape(arrays)
    log_var = log_variance(np.broadcast_to(arrays["--logvar"], (n, k)), "logvar", label="--logvar")
    means = finite_means(np.broadcast_to(arrays["--mu"], (n, k)), label="--mu")
    per_row = {"kl": kl_standard_normal(means, log_var)}
    metrics = summaries(per_row)
    return Result(
        command="gaussian",
        headline="mean D(q(z|x)‖N(0,I))",
        value=metrics["kl"]["mean"],
        rows=n,
        inputs=inputs,
        summary=metrics["kl"],
        metrics=metrics,
        figures={"form": "vae", "dimensions": k},
        per_row=per_row,
        information={"kl": 1.0},
    )


def _fitted(points: np.ndarray, diagonal: bool, label: str) -> _Params:
    """Sample mean and covariance (numpy's: n − 1 in the denominator) of (n, k) points, as one Gaussian."""
    if points.shape[0] < 2:
        raise InputError(f"{label}: {points.shape[0]} point(s); fitting a covariance needs at least 2")
    mu = points.mean(axis=0)[None, :]
    if diagonal:
        variance = points.var(axis=0, ddof=1)[None, :]
        return _Params(mu, log_variance(variance, "var", label=f"{label} (fitted variances)"), None, label)
    cov = np.atleast_2d(np.cov(points, rowvar=False))[None, :, :]
    return _Params(mu, None, cholesky(cov, label=f"{label} (fitted covariance; more points than dimensions, none "
                                           "collinear, are needed)"), label, cov)


def fit(p, q, *, diagonal: bool = False, direction: str = "forward", knn: bool = False, k: int = 5) -> Result:
    """D(P‖Q) in closed form between the Gaussians fitted to samples of P and Q; with ``knn``, the k-NN estimate beside.

    The gap between the two shows how far the samples are from Gaussian (the fit is exact only for Gaussians).
    """
    from dataclasses import replace

    from klcli.commands.samples import kl_estimate, points

    (p_points, p_input), (q_points, q_input) = points(p, "P"), points(q, "Q")
    if p_points.shape[1] != q_points.shape[1]:
        raise ShapeError(f"P has points of {p_points.shape[1]} dimensions but Q of {q_points.shape[1]}")
    first = _fitted(p_points, diagonal, f"--fit P ({p_input['operand']})")
    second = _fitted(q_points, diagonal, f"--fit Q ({q_input['operand']})")
    kl_pair, _, dims = _kl_rows(first, second)
    result = _result(kl_pair, direction, "fit-diagonal" if diagonal else "fit-full", dims, [p_input, q_input],
                     _conditioning(first) + _conditioning(second))
    figures = {**result.figures, "samples": [p_points.shape[0], q_points.shape[0]]}
    information = dict(result.information)
    if knn:
        value, (stderr, blocks) = kl_estimate(p_points, q_points, k, [p_input, q_input])
        figures["knn"] = {"value": value, "stderr": stderr, "stderr_subsamples": blocks,
                          "estimator": "wang-kulkarni-verdu", "k": k}
        information.update({"knn.value": 1.0, "knn.stderr": 1.0})
    return replace(result, figures=figures, information=information)
