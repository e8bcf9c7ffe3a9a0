"""Extreme values (issue 14 items 10, 14, 15, 16): overflowing perplexities, NaN options, undefined figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

INF_NOTE = "perplexity is inf"


def _overflowing(tmp_path, dtype):
    """Logits of ±1e4 (float64) or ±65504 (float16) whose labels are the least likely token: NLL 2e4 or 131008."""
    big = 1e4 if dtype == np.float64 else 65504.0
    z = np.array([[big, -big, 0.0], [-big, big, 0.0], [big, 0.0, -big], [0.0, big, -big]], dtype=dtype)
    labels = np.array([1, 0, 2, 2])
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "labels.npy", labels)
    # The exact mean NLL, straight from the definition (max-shifted logsumexp in Python floats).
    rows = z.astype(np.float64)
    nll = [max(r) + math.log(sum(math.exp(v - max(r)) for v in r)) - r[t] for r, t in zip(rows, labels)]
    return tmp_path / "z.npy", tmp_path / "labels.npy", float(np.mean(nll))


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_perplexity_beyond_float_range_is_inf(cli, tmp_path, dtype):
    logits, labels, mean_nll = _overflowing(tmp_path, dtype)
    assert mean_nll > 709.79  # exp overflows
    run = cli("perplexity", logits, "--labels", labels, "--json", "--per-row")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["value"] == doc["perplexity"] == "inf"
    assert doc["nll"] == pytest.approx(mean_nll, rel=1e-12)
    assert doc["per_row"]["perplexity"] == ["inf"]
    assert any(INF_NOTE in note for note in doc["notes"])


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_xent_labels_beyond_float_range(cli, tmp_path, dtype):
    logits, labels, mean_nll = _overflowing(tmp_path, dtype)
    doc = cli("xent", logits, "--labels", labels, "--json").json()
    assert doc["value"] == pytest.approx(mean_nll, rel=1e-12)
    assert doc["perplexity"] == "inf"
    assert any(INF_NOTE in note for note in doc["notes"])


def test_compare_labels_beyond_float_range(cli, tmp_path):
    logits, labels, mean_nll = _overflowing(tmp_path, np.float64)
    test = tmp_path / "test.npy"
    np.save(test, np.load(logits) * 0.5)  # half the logits: half the NLL, still far beyond float range
    run = cli("compare", logits, test, "--labels", labels, "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["ppl_base"] == "inf" and doc["ppl_test"] == "inf"
    # ln(PPL_test/PPL_base) = mean NLL_test − mean NLL_base = −mean_nll/2: the ratio underflows to 0, no error.
    assert doc["ln_ppl_ratio"] == pytest.approx(-mean_nll / 2, rel=1e-12)
    assert doc["ppl_ratio"] == 0.0
    assert any(INF_NOTE in note for note in doc["notes"])


def test_compare_nll_correlation_is_null_when_a_side_is_constant(cli, tmp_path):
    base = np.tile([0.0, 1.0, 2.0], (4, 1))  # every position the same distribution: constant NLLs
    test = base + np.array([[0, 0, 0], [0, 0.5, 0], [0, 0, 0.25], [0.1, 0, 0]])
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "t.npy", test)
    np.save(tmp_path / "l.npy", np.array([2, 2, 2, 2]))
    doc = cli("compare", tmp_path / "b.npy", tmp_path / "t.npy", "--labels", tmp_path / "l.npy", "--json").json()
    assert doc["nll_correlation"] is None
    # Both sides varying: Pearson's r, as numpy computes it from the NLLs.
    nll = lambda z: np.log(np.exp(z).sum(axis=1)) - z[:, 2]  # noqa: E731
    doc = cli("compare", tmp_path / "t.npy", tmp_path / "t.npy", "--labels", tmp_path / "l.npy", "--json").json()
    assert doc["nll_correlation"] == pytest.approx(np.corrcoef(nll(test), nll(test))[0, 1], rel=1e-12)


def test_compare_with_every_label_ignored_is_an_error(cli, tmp_path):
    np.save(tmp_path / "b.npy", np.zeros((3, 4)))
    np.save(tmp_path / "l.npy", np.full(3, -100))
    run = cli("compare", tmp_path / "b.npy", tmp_path / "b.npy", "--labels", tmp_path / "l.npy")
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("klcli: error: ") and "no position was scored" in run.err and "-100" in run.err
    assert run.err.count("\n") == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("args", [
    ("kl", "0.5,0.5", "0.9,0.1", "--epsilon"),
    ("kl", "1,2", "3,4", "--logits", "--temperature"),
    ("xent", "LOGITS", "--labels", "LABELS", "--label-smoothing"),
    ("rlhf", "POLICY", "REF", "--reward", "1", "--beta"),
])
def test_nan_and_inf_options_are_usage_errors(cli, tmp_path, args, value):
    np.save(tmp_path / "z.npy", np.zeros((2, 3)))
    np.save(tmp_path / "l.npy", np.array([0, 1]))
    np.save(tmp_path / "policy.npy", np.array([[-0.5, -0.7]]))
    np.save(tmp_path / "ref.npy", np.array([[-0.6, -0.6]]))
    files = {"LOGITS": "z.npy", "LABELS": "l.npy", "POLICY": "policy.npy", "REF": "ref.npy"}
    args = [tmp_path / files[a] if a in files else a for a in args]
    assert cli(*args, "0.5").code == 0  # the same command with a finite value runs
    run = cli(*args, value)
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"klcli: error: Invalid value for '{args[-1]}") and run.err.count("\n") == 1
    if value == "nan":  # ±inf may already fail a range check (x >= 0); NaN passes every range check
        assert "nan is not a finite number" in run.err


@pytest.mark.parametrize(("args", "message"), [
    (("--mu1", "nan", "--sigma1", "1", "--mu2", "0", "--sigma2", "1"), "--mu1: row 0 has nan at dimension 0"),
    (("--mu1", "0", "--sigma1", "1", "--mu2", "-inf", "--sigma2", "1"), "--mu2: row 0 has -inf at dimension 0"),
    (("--mu1", "0", "--sigma1", "nan", "--mu2", "0", "--sigma2", "1"), "--sigma1 (P): row 0 has nan"),
    (("--mu1", "0", "--var1", "inf", "--mu2", "0", "--sigma2", "1"), "--var1 (P): row 0 has inf"),
    (("--mu1", "0,0", "--cov1", "NANCOV", "--mu2", "0,0", "--cov2", "NANCOV"),
     "--cov1 (P): matrix 0 has nan at [0, 1]"),
    (("--vae", "--mu", "nan,0", "--logvar", "0,0"), "--mu: row 0 has nan at dimension 0"),
    (("--vae", "--mu", "0,0", "--logvar", "0,inf"), "--logvar: row 0 has inf at dimension 1"),
])
def test_nan_gaussian_parameters_are_input_errors(cli, tmp_path, args, message):
    cov = np.eye(2)
    cov[0, 1] = cov[1, 0] = np.nan  # symmetric (NaN ≠ NaN passes |Σ − Σᵀ| ≤ tol) and "positive definite" to LAPACK
    np.save(tmp_path / "cov.npy", cov)
    run = cli("gaussian", *[tmp_path / "cov.npy" if a == "NANCOV" else a for a in args])
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"klcli: error: {message}")


def test_check_threshold_nan_is_a_usage_error_and_inf_is_allowed(cli):
    run = cli("kl", "0.5,0.5", "0.9,0.1", "--check", "value < nan")
    assert run.code == 2 and run.out == "" and "threshold is NaN" in run.err
    run = cli("kl", "0.5,0.5", "0.9,0.1", "--check", "value < inf", "--json")
    assert run.code == 0 and run.json()["checks"][0]["passed"] is True
    run = cli("kl", "0.5,0.5", "1,0", "--check", "value < inf", "--json")  # D = inf: the check fails, exit 1
    assert run.code == 1 and run.json()["checks"][0]["passed"] is False


@pytest.mark.parametrize(("args", "applies"), [
    (("kl", "Z32", "Z32", "--logits"), True),
    (("kl", "Z16", "Z32", "--logits"), True),
    (("kl", "Z64", "Z64", "--logits"), False),
    (("kl", "0.5,0.5", "0.9,0.1"), False),
    (("kl", "Z32", "Z32", "--logits", "--temperature", "2"), False),
    (("perplexity", "Z32", "--labels", "LABELS"), True),
    (("perplexity", "Z64", "--labels", "LABELS"), False),
    (("perplexity", "Z32", "--labels", "LABELS", "--temperature", "2"), False),
    (("xent", "Z32", "--labels", "LABELS", "--label-smoothing", "0.1"), False),
    (("perplexity", "LOGPROBS", "--kind", "logprobs"), False),
])
def test_precision_fast_reports_the_precision_used(cli, tmp_path, args, applies):
    z = np.random.default_rng(0).standard_normal((3, 5))
    files = {"Z64": z, "Z32": z.astype(np.float32), "Z16": z.astype(np.float16),
             "LOGPROBS": np.array([-0.5, -0.25], dtype=np.float32)}
    for name, values in files.items():
        np.save(tmp_path / f"{name}.npy", values)
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2]))
    paths = {name: tmp_path / f"{name}.npy" for name in files} | {"LABELS": tmp_path / "labels.npy"}
    argv = [paths.get(a, a) for a in args]
    doc = cli(*argv, "--precision", "fast", "--json").json()
    notes = [n for n in doc["notes"] if "--precision fast does not apply" in n]
    assert doc["precision"] == ("fast" if applies else "precise")
    assert bool(notes) == (not applies)
    table = cli(*argv, "--precision", "fast").out
    assert ("precise" in table and "does not apply" in table) == (not applies)
