"""``kl --samples`` and ``entropy --samples``: k-NN estimates for continuous distributions known by samples."""

from __future__ import annotations

import numpy as np

from klcli.core.stats import summarize
from klcli.errors import InputError, ShapeError, UsageError
from klcli.io.operand import read_array
from klcli.result import Result

INSTALL = "pip install 'klcli[samples]'"
ESTIMATORS = {"kl": "wang-kulkarni-verdu", "entropy": "kozachenko-leonenko"}


def knn():
    """The k-NN core, whose neighbour search needs scipy (the optional extra ``klcli[samples]``)."""
    try:
        import scipy.spatial  # noqa: F401
    except ImportError:
        raise UsageError(f"--samples needs scipy for its nearest-neighbour search: {INSTALL}") from None
    from klcli.core import knn as module

    return module


def points(operand, role: str) -> tuple[np.ndarray, dict]:
    """An (n, d) float64 array of sample points (a 1-D array is n points in d = 1) and its ``inputs`` entry."""
    values, source = read_array(operand, role)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ShapeError(f"{source.label}: samples are an (n, d) array, one point per row; got shape "
                         f"{tuple(values.shape)}")
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{source.label}: point {row}, coordinate {col} is {float(values[row, col])!r}; sample "
                         "points must be finite")
    return values, dict(source.describe(values.shape[0]), kind="samples")


def _enough(count: int, k: int, label: str, others: bool) -> None:
    need = k + 1 if others else k
    if count < need:
        raise InputError(f"{label}: {count} points, too few for the {k}-th nearest neighbour (--k {k}); give at "
                         f"least {need} points or a smaller --k")


def _estimate(module, function, sets: list[np.ndarray], k: int):
    """The estimate and its (stderr, subsamples), tied points reported by name."""
    try:
        return function(*sets, k), module.subsample_stderr(function, sets, k)
    except module.TiedPoints as tied:
        raise InputError(f"{tied.which}: point {tied.index} has its {k}-th nearest neighbour at distance 0; the "
                         "k-NN estimators assume continuous densities, so repeated points have no density ratio "
                         "(remove duplicates, add jitter far below the data's scale, or raise --k)") from None


def _result(command: str, headline: str, estimate, k: int, shape: list[int], dims: int, inputs: list[dict]) -> Result:
    value, (stderr, blocks) = estimate
    return Result(
        command=command,
        headline=headline,
        value=value,
        rows=shape[0],
        inputs=inputs,
        summary=summarize(np.array([value])),
        summary_name="estimate",
        figures={"stderr": stderr, "estimator": ESTIMATORS[command], "k": k, "samples": shape, "dimensions": dims,
                 "stderr_subsamples": blocks},
        notes=["k-NN estimate: assumes i.i.d. samples of continuous densities (see --help)"],
        information={"stderr": 1.0},
    )


def kl_estimate(p_points: np.ndarray, q_points: np.ndarray, k: int, inputs: list[dict]):
    """The Wang–Kulkarni–Verdú estimate of D(P‖Q) (nats) and its (stderr, subsamples), from (n, d) and (m, d) points."""
    module = knn()
    if p_points.shape[1] != q_points.shape[1]:
        raise ShapeError(f"P has points of {p_points.shape[1]} dimensions but Q of {q_points.shape[1]}; both "
                         "samples must live in the same space")
    _enough(p_points.shape[0], k, inputs[0]["operand"], True)
    _enough(q_points.shape[0], k, inputs[1]["operand"], False)
    return _estimate(module, module.kl_divergence, [p_points, q_points], k)


def kl_from_samples(p, q, *, k: int = 5) -> Result:
    """The Wang–Kulkarni–Verdú estimate of D(P‖Q) from samples of P (n, d) and Q (m, d), with its stderr."""
    knn()  # scipy's absence is told before any file is read
    p_points, p_input = points(p, "P")
    q_points, q_input = points(q, "Q")
    estimate = kl_estimate(p_points, q_points, k, [p_input, q_input])
    return _result("kl", "k-NN estimate of D(P‖Q)", estimate, k, [p_points.shape[0], q_points.shape[0]],
                   p_points.shape[1], [p_input, q_input])


def entropy_from_samples(x, *, k: int = 5) -> Result:
    """The Kozachenko–Leonenko estimate of the differential entropy h(X) from (n, d) samples, with its stderr."""
    module = knn()
    x_points, x_input = points(x, "P")
    _enough(x_points.shape[0], k, x_input["operand"], True)
    estimate = _estimate(module, module.entropy, [x_points], k)
    return _result("entropy", "k-NN estimate of h(P)", estimate, k, [x_points.shape[0]], x_points.shape[1], [x_input])
