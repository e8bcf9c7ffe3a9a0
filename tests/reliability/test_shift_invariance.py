"""Shift invariance of precision (issue 14 item 12): logits + c give every figure within SPEC §1's contract.

softmax(z + c) = softmax(z), so a constant added to every logit must not
change any figure beyond 1e-9 relative or 1e-14 absolute of the exact value
on the same (shifted) input values. Before the fix, figures formed from
numbers of the logits' magnitude (log Σ e^z − E_p[z]) lost ~1e-13 absolute
at c = 600: the entropy of a confident row was off by up to 1.7e-5 relative,
a confident token's NLL by 3.9e-6.

The fast tier checks small rows against mpmath (50 digits); the slow tier
32,000-wide rows against the numpy.longdouble reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from klcli.core.compare import label_stats, position_stats
from klcli.core.discrete import cross_entropy_rows, entropy_rows, js_rows, kl_rows
from klcli.core.logspace import as_log_rows
from klcli.core.perplexity import token_nll
from tests import reference

SHIFTS = [0.0, 30.0, 300.0, 600.0, -600.0]


def _within_contract(got, want, what):
    got, want = np.asarray(got, dtype=np.longdouble), np.asarray(want, dtype=np.longdouble)
    tolerance = np.maximum(1e-9 * np.abs(want), 1e-14)
    excess = np.abs(got - want) / tolerance
    assert np.all(excess <= 1), f"{what}: {float(np.max(excess)):.3g}× the contract's tolerance"


def _rows(rng, rows, width, case):
    z = rng.standard_normal((rows, width)) * 2
    if case == "confident":  # p_max ≈ 1 − 1e-13 … 1 − 1e-9: H, the label's NLL and KL are tiny
        z[:, 0] += rng.uniform(25, 35, rows)
        y = z + rng.standard_normal(z.shape) * 0.3
    else:  # nearly identical: KL ≈ 1e-6, just above the normaliser refinement's threshold
        y = z + 3 + rng.standard_normal(z.shape) * 2e-3
    return z, y


def _figures(z, y, labels):
    p, q = as_log_rows(z, "logits", label="P"), as_log_rows(y, "logits", label="Q")
    stats = position_stats(p, q, 5)
    return {
        "kl": kl_rows(p, q),
        "entropy": entropy_rows(p),
        "cross_entropy": cross_entropy_rows(p, q),
        "js": js_rows(p, q),
        "nll": token_nll(z, labels)[0],
        "compare.kl": stats["kl"],
        "compare.kl_reverse": stats["kl_reverse"],
        "compare.js": stats["js"],
        "compare.nll_base": label_stats(p, q, labels)["nll_base"],
    }


def _shifted(seed: int, rows: int, vocab: int, case: str, shift: float):
    """float32 logits P and Q of ``case`` with ``shift`` added to every logit, and P's argmax as labels."""
    z, y = _rows(np.random.default_rng(seed), rows, vocab, case)
    z, y = (z + shift).astype(np.float32), (y + shift).astype(np.float32)
    return z, y, np.argmax(z, axis=1)


@pytest.mark.parametrize("case", ["confident", "near"])
@pytest.mark.parametrize("shift", SHIFTS)
def test_small_rows_against_mpmath(shift, case):
    z, y, labels = _shifted(20, 6, 40, case, shift)
    got = _figures(z, y, labels)
    exact = [reference.mp_figures(z[i], y[i], int(labels[i])) for i in range(z.shape[0])]
    for name, values in got.items():
        key = name.split(".")[-1].replace("_base", "")
        _within_contract(values, [row[key] for row in exact], f"{name} at shift {shift}")


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0)])
def test_js_at_the_ends_of_the_weights_range_is_zero_not_nan(cli, weights):
    """Issue 14 item 11: π·D(·‖M) with π = 0 is 0 even where D is infinite; M is then the other side."""
    for p, q in [("1,0", "0.5,0.5"), ("0.5,0.5", "1,0"), ("1,0", "0,1")]:
        run = cli("js", p, q, "--weights", ",".join(map(str, weights)), "--json")
        assert run.code == 0, run.err
        exact = reference.mp_figures(np.log(np.maximum([float(v) for v in p.split(",")], 1e-300)),
                                     np.log(np.maximum([float(v) for v in q.split(",")], 1e-300)), 0, weights)
        assert run.json()["value"] == pytest.approx(exact["js"], abs=1e-14) and run.json()["value"] == 0.0


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 60, reason="numpy.longdouble is no wider than float64 here")
@pytest.mark.slow
@pytest.mark.parametrize("case", ["confident", "near"])
@pytest.mark.parametrize("shift", SHIFTS)
def test_vocabulary_rows_against_extended_precision(shift, case):
    z, y, labels = _shifted(21, 8, 32000, case, shift)
    want = {
        "kl": reference.kl(z, y),
        "kl_reverse": reference.kl(y, z),
        "entropy": reference.entropy(z),
        "cross_entropy": reference.cross_entropy(z, y),
        "js": reference.js(z, y, (0.5, 0.5)),
        "nll": reference.token_nll(z, labels),
    }
    for name, values in _figures(z, y, labels).items():
        _within_contract(values, want[name.split(".")[-1].replace("_base", "")], f"{name} at shift {shift}")


def test_xent_command_at_shifted_logits(cli, tmp_path):
    """The printed figures, through the CLI: confident rows' entropy and cross-entropy at logits near 600."""
    rng = np.random.default_rng(22)
    z, y = _rows(rng, 4, 40, "confident")
    z, y = (z + 600).astype(np.float32), (y + 600).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    doc = cli("xent", tmp_path / "z.npy", tmp_path / "y.npy", "--logits", "--json", "--per-row").json()
    exact = [reference.mp_figures(z[i], y[i], 0) for i in range(z.shape[0])]
    for name in ("entropy", "cross_entropy", "kl"):
        _within_contract(doc["per_row"][name], [row[name] for row in exact], name)
