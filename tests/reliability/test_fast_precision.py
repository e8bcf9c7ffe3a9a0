"""--precision fast: float32 arithmetic with an estimated error bound, and a precise fallback."""

from __future__ import annotations

import numpy as np
import pytest

from klcli.core import fast
from klcli.core.discrete import kl_rows
from klcli.core.logspace import as_log_rows
from klcli.errors import DistributionError
from tests import reference


def _both(z, y):
    fast_kl = kl_rows(as_log_rows(z, "logits", label="P", fast=True), as_log_rows(y, "logits", label="Q", fast=True))
    precise = kl_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"))
    return fast_kl, precise


@pytest.mark.parametrize(("vocab", "noise"), [(1000, 0.5), (32000, 0.5), (32000, 0.05), (200_000, 0.3)])
def test_fast_rows_stay_within_their_estimate_and_the_mean_within_1e_5(vocab, noise):
    rng = np.random.default_rng(vocab)
    z = (rng.standard_normal((16, vocab)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * noise).astype(np.float32)
    expected = reference.kl(z, y)
    estimate, error = fast.kl_estimate(z, y)
    assert np.all(np.abs(estimate - expected) <= error)
    fast_kl, _ = _both(z, y)
    assert np.all(np.abs(fast_kl - expected) <= fast.RELATIVE * expected)
    assert abs(fast_kl.mean() - expected.mean()) <= 1e-5 * expected.mean()


def test_nearly_identical_rows_fall_back_to_full_precision():
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((8, 32000)) * 2).astype(np.float32)
    y = (z + 5 + rng.standard_normal(z.shape) * 1e-4).astype(np.float32)  # KL ≈ 1e-9 per row
    fast_kl, precise = _both(z, y)
    np.testing.assert_array_equal(fast_kl, precise)
    np.testing.assert_allclose(fast_kl, reference.kl(z, y), rtol=1e-6)


def test_large_logits_take_the_precise_path():
    z = np.array([[100.0, 0.0, -3.0], [1.0, 2.0, 3.0]], dtype=np.float32)  # e^100 overflows float32
    y = np.array([[99.0, 1.0, -3.0], [1.0, 2.5, 3.0]], dtype=np.float32)
    _, error = fast.kl_estimate(z, y)
    assert error[0] == np.inf and np.isfinite(error[1])
    fast_kl, _ = _both(z, y)
    np.testing.assert_allclose(fast_kl, reference.kl(z, y), rtol=fast.RELATIVE, atol=1e-14)


@pytest.mark.parametrize("single", ["p", "q"])
def test_a_single_row_broadcasts(single):
    rng = np.random.default_rng(3)
    many = (rng.standard_normal((5, 300)) * 2).astype(np.float32)
    one = (rng.standard_normal((1, 300)) * 2).astype(np.float32)
    z, y = (one, many) if single == "p" else (many, one)
    fast_kl, _ = _both(z, y)
    expected = reference.kl(np.broadcast_to(z, many.shape), np.broadcast_to(y, many.shape))
    assert fast_kl.shape == (5,)
    np.testing.assert_allclose(fast_kl, expected, rtol=fast.RELATIVE)


@pytest.mark.parametrize("side", ["P", "Q"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_an_invalid_logit_is_reported_with_its_row(bad, side):
    z = np.zeros((4, 10), dtype=np.float32)
    y = np.ones((4, 10), dtype=np.float32)
    (z if side == "P" else y)[2, 7] = bad
    name = "p" if side == "P" else "q"
    with pytest.raises(DistributionError, match=rf"^{side} \({name}\.npy\): row 12 has .* at column 7; logits must"):
        kl_rows(as_log_rows(z, "logits", label="P (p.npy)", first_row=10, fast=True),
                as_log_rows(y, "logits", label="Q (q.npy)", first_row=10, fast=True))


def test_cli(cli, tmp_path):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((40, 5000)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * 0.5).astype(np.float32)
    np.save(tmp_path / "p.npy", z)
    np.save(tmp_path / "q.npy", y)
    np.save(tmp_path / "p16.npy", z.astype(np.float16))
    np.save(tmp_path / "q16.npy", y.astype(np.float16))
    fast_run = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--precision", "fast", "--json").json()
    precise = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--json").json()
    assert fast_run["precision"] == "fast" and precise["precision"] == "precise"
    assert fast_run["value"] == pytest.approx(reference.kl(z, y).mean(), rel=1e-5)
    assert precise["value"] == pytest.approx(reference.kl(z, y).mean(), rel=1e-9)
    halves = cli("kl", tmp_path / "p16.npy", tmp_path / "q16.npy", "--logits", "--precision", "fast", "-q")
    expected = reference.kl(z.astype(np.float16).astype(np.float32), y.astype(np.float16).astype(np.float32))
    assert float(halves.out) == pytest.approx(expected.mean(), rel=1e-5)
    run = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--precision", "quick")
    assert run.code == 2 and run.err == "klcli: error: --precision 'quick': use precise or fast\n"


@pytest.mark.parametrize("vocab", [1000, 32000, 200_000])
def test_fast_log_normaliser_stays_within_its_estimate(vocab):
    rng = np.random.default_rng(vocab + 1)
    z = (rng.standard_normal((16, vocab)) * 2).astype(np.float32)
    expected = reference.log_normaliser(z).astype(np.float64)
    log_mass, error = fast.log_normaliser(z)
    assert np.all(np.abs(log_mass - expected) <= error)
    assert np.all(error < 2e-5)


def test_fast_perplexity_and_token_cross_entropy(cli, tmp_path):
    rng = np.random.default_rng(9)
    z = (rng.standard_normal((300, 4000)) * 3).astype(np.float32)
    labels = rng.integers(0, 4000, size=300)
    labels[::7] = -100
    np.save(tmp_path / "logits.npy", z)
    np.save(tmp_path / "logits16.npy", z.astype(np.float16))
    np.save(tmp_path / "labels.npy", labels)
    counted = labels != -100
    expected = reference.token_nll(z[counted], labels[counted])
    run = cli("perplexity", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--precision", "fast",
              "--json").json()
    assert run["precision"] == "fast" and run["tokens"] == counted.sum()
    assert run["perplexity"] == pytest.approx(np.exp(expected.mean()), rel=1e-6)
    assert run["nll"] == pytest.approx(expected.mean(), abs=2e-5)
    xent = cli("xent", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--precision", "fast",
               "-q").out
    assert float(xent) == pytest.approx(expected.mean(), abs=2e-5)
    halves = cli("perplexity", tmp_path / "logits16.npy", "--labels", tmp_path / "labels.npy", "--precision",
                 "fast", "-q").out
    widened = z.astype(np.float16).astype(np.float32)
    expected = reference.token_nll(widened[counted], labels[counted])
    assert float(halves) == pytest.approx(np.exp(expected.mean()), rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fast_perplexity_reports_an_invalid_logit_and_falls_back_for_large_ones(cli, tmp_path, bad):
    z = np.zeros((40, 50), dtype=np.float32)
    z[33, 4] = bad
    np.save(tmp_path / "bad.npy", z)
    np.save(tmp_path / "labels.npy", np.arange(40) % 50)
    precise = cli("perplexity", tmp_path / "bad.npy", "--labels", tmp_path / "labels.npy")
    run = cli("perplexity", tmp_path / "bad.npy", "--labels", tmp_path / "labels.npy", "--precision", "fast")
    assert run.code == precise.code == 2 and run.err == precise.err
    assert "row 33 has" in run.err and "at column 4; logits must be finite" in run.err
    big = np.random.default_rng(10).standard_normal((40, 50)).astype(np.float32) + 200  # e^200 overflows float32
    np.save(tmp_path / "big.npy", big)
    labels = np.arange(40) % 50
    fast_run = cli("perplexity", tmp_path / "big.npy", "--labels", tmp_path / "labels.npy", "--precision", "fast",
                   "-q").out
    assert float(fast_run) == pytest.approx(np.exp(reference.token_nll(big, labels).mean()), rel=1e-12)


def test_fast_needs_labels_for_xent(cli, tmp_path):
    run = cli("xent", "0.5,0.5", "0.9,0.1", "--precision", "fast")
    assert run.code == 2 and run.err.startswith("klcli: error: --precision fast: xent has a float32 kernel only")


def test_fast_perplexity_is_identical_for_every_thread_count(cli, tmp_path):
    rng = np.random.default_rng(11)
    np.save(tmp_path / "logits.npy", (rng.standard_normal((500, 3000)) * 2).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, 3000, size=500))
    runs = [cli("perplexity", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--precision", "fast",
                "--threads", threads, "--json", "--per-row").json() for threads in ("1", "3")]
    for run in runs:  # (--threads above the cores available earns a note that it was capped)
        run.pop("notes", None)
    assert runs[0] == runs[1]
