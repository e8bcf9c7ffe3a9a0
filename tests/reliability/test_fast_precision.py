"""--precision fast: float32 arithmetic with an estimated error bound, and a precise fallback."""

from __future__ import annotations

import numpy as np
import pytest

from klcli.core.discrete import FAST_RELATIVE, fast_error_bound, kl_rows
from klcli.core.logspace import as_log_rows


def _both(z, y):
    fast = kl_rows(as_log_rows(z, "logits", label="P", fast=True), as_log_rows(y, "logits", label="Q", fast=True))
    precise = kl_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"))
    return fast, precise


@pytest.mark.parametrize(("vocab", "noise"), [(1000, 0.5), (32000, 0.5), (32000, 0.05), (200_000, 0.3)])
def test_fast_rows_stay_within_their_bound_and_the_mean_within_1e_5(vocab, noise):
    rng = np.random.default_rng(vocab)
    z = (rng.standard_normal((16, vocab)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * noise).astype(np.float32)
    fast, precise = _both(z, y)
    p_rows, q_rows = as_log_rows(z, "logits", label="P", fast=True), as_log_rows(y, "logits", label="Q", fast=True)
    mean_difference = precise + (p_rows.offset - q_rows.offset)
    bound = fast_error_bound(p_rows, q_rows, mean_difference)
    assert np.all(np.abs(fast - precise) <= bound)
    assert np.all(np.abs(fast - precise) <= FAST_RELATIVE * precise)
    assert abs(fast.mean() - precise.mean()) <= 1e-5 * precise.mean()


def test_nearly_identical_rows_fall_back_to_full_precision():
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((8, 32000)) * 2).astype(np.float32)
    y = (z + 5 + rng.standard_normal(z.shape) * 1e-4).astype(np.float32)  # KL ≈ 1e-9 per row
    fast, precise = _both(z, y)
    np.testing.assert_array_equal(fast, precise)


def test_large_logits_take_the_precise_path():
    z = np.array([[100.0, 0.0, -3.0], [1.0, 2.0, 3.0]], dtype=np.float32)  # e^100 overflows float32
    y = np.array([[99.0, 1.0, -3.0], [1.0, 2.5, 3.0]], dtype=np.float32)
    fast, precise = _both(z, y)
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, precise, rtol=FAST_RELATIVE)


def test_cli(cli, tmp_path):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((40, 5000)) * 2).astype(np.float32)
    np.save(tmp_path / "p.npy", z)
    np.save(tmp_path / "q.npy", (z + rng.standard_normal(z.shape) * 0.5).astype(np.float32))
    fast = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--precision", "fast", "--json").json()
    precise = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--json").json()
    assert fast["precision"] == "fast" and precise["precision"] == "precise"
    assert fast["value"] == pytest.approx(precise["value"], rel=1e-5)
    run = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--precision", "quick")
    assert run.code == 2 and run.err == "klcli: error: --precision 'quick': use precise or fast\n"
