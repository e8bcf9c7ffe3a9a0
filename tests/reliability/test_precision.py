"""The precision contract (SPEC §1): within 1e-9 relative (or 1e-14 absolute) of an exact computation.

The reference is computed in extended precision (numpy.longdouble, 64-bit
mantissa on x86) from the same float32 inputs, so it is closer to the exact
value than any float64 computation.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from klcli.core import discrete
from klcli.core.compare import position_stats
from klcli.core.discrete import js_rows, kl_rows
from klcli.core.logspace import as_log_rows
from tests import reference

if np.finfo(np.longdouble).nmant < 60:
    pytest.skip("numpy.longdouble is no wider than float64 here", allow_module_level=True)


def _within_contract(got, want):
    got, want = np.asarray(got, dtype=np.longdouble), np.asarray(want, dtype=np.longdouble)
    tolerance = np.maximum(1e-9 * np.abs(want), 1e-14)
    assert np.all(np.abs(got - want) <= tolerance), float(np.max(np.abs(got - want) / tolerance))


@pytest.mark.parametrize("case", ["benchmark", "hard"])
def test_kl_per_row_and_mean(case):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((48, 32000)) * 2).astype(np.float32)
    if case == "benchmark":
        y = (z + rng.standard_normal(z.shape) * 0.5).astype(np.float32)
    else:  # Q = P + a constant shift of 5 + noise of 1e-4 per logit: KL ≈ 1e-9 per row
        y = (z + 5 + rng.standard_normal(z.shape) * 1e-4).astype(np.float32)
    got = kl_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"))
    want = reference.kl(z, y)
    if case == "hard":
        assert np.all(want < 1e-7)
    _within_contract(got, want)
    _within_contract(np.mean(got), np.mean(want))


def test_compare_kl_on_the_hard_case():
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((16, 32000)) * 2).astype(np.float32)
    y = (z + 5 + rng.standard_normal(z.shape) * 1e-4).astype(np.float32)
    stats = position_stats(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"), 5)
    _within_contract(stats["kl"], reference.kl(z, y))
    _within_contract(stats["kl_reverse"], reference.kl(y, z))
    assert np.all(stats["js"] > 0)


def test_float16_inputs_follow_the_same_contract():
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((8, 5000)) * 2).astype(np.float16)
    y = (z.astype(np.float32) + rng.standard_normal(z.shape) * 0.1).astype(np.float16)
    got = kl_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"))
    _within_contract(got, reference.kl(z, y))
    js = js_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"))
    assert np.all(np.isfinite(js)) and np.all(js >= 0)


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.1, 0.9), (1e-120, 1 - 1e-120)])
@pytest.mark.parametrize(("offset_p", "offset_q"), [(0.0, 0.0), (300.0, 300.0), (-400.0, 600.0)])
def test_js_per_row_within_the_contract(weights, offset_p, offset_q):
    """Also with logits far from 0, where the unnormalised weights are huge or tiny."""
    rng = np.random.default_rng(6)
    z = (rng.standard_normal((12, 32000)) * 2 + offset_p).astype(np.float32)
    y = (z - offset_p + offset_q + rng.standard_normal(z.shape) * 0.5).astype(np.float32)
    got = js_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"), weights)
    _within_contract(got, reference.js(z, y, weights))
    single = js_rows(as_log_rows(z[:1], "logits", label="P"), as_log_rows(y, "logits", label="Q"), weights)
    _within_contract(single, reference.js(np.broadcast_to(z[:1], y.shape), y, weights))


@pytest.mark.parametrize("case", ["benchmark", "hard"])
def test_xent_per_row_within_the_contract(cli, tmp_path, case):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((24, 32000)) * 2).astype(np.float32)
    noise = 0.5 if case == "benchmark" else 1e-4
    y = (z + (0 if case == "benchmark" else 5) + rng.standard_normal(z.shape) * noise).astype(np.float32)
    np.save(tmp_path / "p.npy", z)
    np.save(tmp_path / "q.npy", y)
    doc = cli("xent", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--json", "--per-row").json()
    _within_contract(np.array(doc["per_row"]["cross_entropy"]), reference.cross_entropy(z, y))
    _within_contract(np.array(doc["per_row"]["kl"]), reference.kl(z, y))
    _within_contract(doc["value"], np.mean(reference.cross_entropy(z, y)))


def test_js_between_logits_whose_weights_are_far_apart_in_scale():
    """P's e^z near 1e-170, Q's near 1e+260 (a peaked Q): the mixture must not lose either side."""
    rng = np.random.default_rng(8)
    z = (rng.standard_normal((6, 32000)) * 2 - 400).astype(np.float32)
    y = (rng.standard_normal((6, 32000)) * 8 + 560).astype(np.float32)
    for weights in [(0.5, 0.5), (0.9, 0.1)]:
        got = js_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"), weights)
        _within_contract(got, reference.js(z, y, weights))


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.1, 0.9)])
@pytest.mark.parametrize("noise", [1e-7, 1e-5, 1e-3, 0.01, 0.03, 0.1, "hard"])
def test_js_default_contract_from_identical_to_drifted_rows(weights, noise):
    """Nearly identical rows (JS ≪ the closed form's 1e-15 rounding) through g's series, as JS grows past it."""
    rng = np.random.default_rng(9)
    z = (rng.standard_normal((6, 32000)) * 2).astype(np.float32)
    if noise == "hard":  # Q = P + 5 + noise of 1e-4: |log(q/p)| small, but P's and Q's logits far apart
        y = (z + 5 + rng.standard_normal(z.shape) * 1e-4).astype(np.float32)
    else:
        y = (z + rng.standard_normal(z.shape) * noise).astype(np.float32)
    got = js_rows(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"), weights)
    _within_contract(got, reference.js(z, y, weights))


def test_js_of_tiny_rows_with_a_few_wide_differences():
    """Rows below 1e-4 whose largest |log(q/p)| is beyond the series' reach (on tokens of tiny probability)
    take the element-wise closed form; rows of one block may go either way."""
    rng = np.random.default_rng(10)
    z = (rng.standard_normal((6, 32000)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * 1e-3).astype(np.float32)
    low = np.argsort(z[::2], axis=1)[:, :3]  # the three least probable tokens of every other row
    y[::2][np.arange(3)[:, None], low] += 4.0  # |log(q/p)| ≈ 4 there, on probabilities near e^-20
    p_rows, q_rows = as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q")
    want = reference.js(z, y, (0.5, 0.5))
    assert np.all(want < 1e-4)
    with mock.patch.object(discrete, "js_from_ratio", wraps=discrete.js_from_ratio) as closed_form:
        got = js_rows(p_rows, q_rows)
    assert closed_form.call_args[0][0].shape[0] == 3  # the wide rows only; the others took the series
    _within_contract(got, want)


def test_compare_js_from_its_own_log_ratio_within_the_contract():
    rng = np.random.default_rng(11)
    z = (rng.standard_normal((8, 32000)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * 0.01).astype(np.float32)
    stats = position_stats(as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q"), 5)
    _within_contract(stats["js"], reference.js(z, y, (0.5, 0.5)))
    _within_contract(stats["kl"], reference.kl(z, y))
    _within_contract(stats["tv"], reference.total_variation(z, y))


def test_tiny_js_of_a_row_is_the_same_in_any_block():
    """Each row's series degree follows its own spread: cutting the rows differently (blocks, --jobs pieces,
    shards) gives the same bits — here rows of very different spreads, together and one by one."""
    rng = np.random.default_rng(12)
    z = (rng.standard_normal((8, 4096)) * 2).astype(np.float32)
    noise = np.array([1e-4, 1e-3, 3e-3, 0.01, 0.015, 0.02, 0.024, 0.026])[:, None]
    y = (z + rng.standard_normal(z.shape) * noise).astype(np.float32)
    rows = [as_log_rows(side, "logits", label=name) for side, name in ((z, "P"), (y, "Q"))]
    together = js_rows(*rows)
    assert np.all(together < 1e-4)
    alone = np.concatenate([js_rows(as_log_rows(z[i:i + 1], "logits", label="P"),
                                    as_log_rows(y[i:i + 1], "logits", label="Q")) for i in range(8)])
    np.testing.assert_array_equal(together, alone)
    stats = position_stats(*rows, 5)
    np.testing.assert_array_equal(stats["js"], alone)


@pytest.mark.parametrize("command", [["js", "--logits"], ["compare"]])
def test_nearly_identical_rows_give_the_same_report_on_one_job_or_two(cli, tmp_path, command):
    rng = np.random.default_rng(13)
    z = (rng.standard_normal((64, 4096)) * 2).astype(np.float32)
    y = (z + rng.standard_normal(z.shape) * np.linspace(1e-4, 0.028, 64)[:, None]).astype(np.float32)
    np.save(tmp_path / "p.npy", z)
    np.save(tmp_path / "q.npy", y)
    runs = [cli(command[0], tmp_path / "p.npy", tmp_path / "q.npy", *command[1:], "--json", "--per-row",
                "--jobs", jobs).json() for jobs in ("1", "2")]
    for run in runs:
        run.pop("notes", None)
    assert runs[0] == runs[1]
