"""The fast kernels' float32 expm1 (klcli.core.fast.expm1): within ELEMENT_UNITS·u of the exact value.

Every degree the polynomial takes is measured at the widest spread that selects it, on every fifth
float32 of the binade just below that spread (where its truncation is largest; every one was measured
once, at most 2.8u) and on a dense grid over the rest
of [−V, V]; for wider blocks, and a NaN or infinite spread, NumPy's expm1 is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from klcli.core import fast

LEVELS = [2.0 ** (k / 4) for k in range(-120, 1)]  # the spreads expm1 rounds up to, 2^-30 … 1


def _widest_per_degree() -> dict[int, float]:
    widest: dict[int, float] = {}
    for level in LEVELS:
        widest[fast.expm1_degree(level)] = level
    return widest


def _relative_error(u: np.ndarray, spread: float) -> float:
    got = fast.expm1(u, np.empty_like(u), spread).astype(np.float64)
    want = np.expm1(u.astype(np.float64))
    nonzero = want != 0
    assert np.all(got[~nonzero] == 0)
    return float(np.max(np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])) / fast._UNIT)


@pytest.mark.parametrize(("degree", "spread"), sorted(_widest_per_degree().items()))
def test_every_degree_within_the_element_units_at_its_widest_spread(degree, spread):
    top = np.float32(spread)
    bits = np.arange(np.float32(spread / 2).view(np.int32), top.view(np.int32) + 1, 5, dtype=np.int32)
    bits = np.append(bits, top.view(np.int32))  # every fifth float32 of the binade, and its top
    binade = bits.view(np.float32)
    grid = np.linspace(-spread, spread, 1_000_001, dtype=np.float64).astype(np.float32)
    values = np.concatenate([binade, -binade, grid])
    assert _relative_error(values, spread) <= fast.ELEMENT_UNITS


@pytest.mark.parametrize("spread", [float("nan"), float("inf"), 100.0, 1.0000001])
def test_wider_blocks_and_non_finite_values_are_numpys(spread):
    u = np.array([-80.0, -3.0, -1.0000001, 1.0000001, 2.5, 80.0, 100.0, np.inf, -np.inf, np.nan, 0.5, -0.0],
                 dtype=np.float32)
    with np.errstate(over="ignore"):
        got = fast.expm1(u, np.empty_like(u), spread)
        want = np.expm1(u)
    np.testing.assert_array_equal(got, want)  # NumPy's own, NaN where NaN


def test_a_spread_of_zero_and_blocks_of_any_shape():
    u = np.zeros((3, 5), dtype=np.float32)
    np.testing.assert_array_equal(fast.expm1(u, np.empty_like(u), 0.0), u)
    rng = np.random.default_rng(0)
    u = (rng.standard_normal((7, 40_001)) * 0.3).astype(np.float32)  # not a multiple of the pieces
    spread = float(np.max(np.abs(u)))
    assert _relative_error(u, spread) <= fast.ELEMENT_UNITS


def test_the_degree_follows_the_spread():
    degrees = [fast.expm1_degree(level) for level in LEVELS]
    assert degrees == sorted(degrees) and degrees[0] == 1 and degrees[-1] == fast.expm1_degree(fast.EXPM1_CUT)
