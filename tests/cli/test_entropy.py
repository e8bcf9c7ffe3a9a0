"""klcli entropy: H(P), H/log V and exp H against scipy.stats.entropy, in every kind, base, rank and format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import FORMATS, write_table

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")

BASES = {"e": math.e, "2": 2.0, "10": 10.0, "3": 3.0}


def _probs(shape, seed=0):
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], 0.7), size=shape[:-1])


@pytest.mark.parametrize("kind", ["probs", "logprobs", "logits"])
@pytest.mark.parametrize("base", list(BASES))
def test_every_kind_and_base_against_scipy(cli, tmp_path, kind, base):
    probs = _probs((6, 9), seed=1)
    logits = np.log(probs) + np.random.default_rng(2).normal(size=(6, 1)) * 3  # shifted per row: same softmax
    values = {"probs": probs, "logprobs": np.log(probs), "logits": logits}[kind]
    np.save(tmp_path / "p.npy", values)
    doc = cli("entropy", tmp_path / "p.npy", "--kind", kind, "--base", base, "--json", "--per-row").json()
    expected = stats.entropy(probs, base=BASES[base], axis=-1)
    np.testing.assert_allclose(doc["per_row"]["entropy"], expected, rtol=1e-12)
    assert doc["value"] == pytest.approx(expected.mean(), rel=1e-12)
    assert doc["entropy"]["max"] == pytest.approx(expected.max(), rel=1e-12)
    # Unit-free figures: the same whatever --base says.
    nats = stats.entropy(probs, axis=-1)
    np.testing.assert_allclose(doc["per_row"]["normalized_entropy"], nats / math.log(9), rtol=1e-12)
    np.testing.assert_allclose(doc["per_row"]["effective_support"], np.exp(nats), rtol=1e-12)
    assert doc["normalized_entropy"]["mean"] == pytest.approx(np.mean(nats / math.log(9)), rel=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format(cli, tmp_path, fmt):
    probs = _probs((12, 5), seed=3)
    operand = write_table(tmp_path / "p", probs, fmt)
    doc = cli("entropy", operand, "--json").json()
    assert doc["value"] == pytest.approx(stats.entropy(probs, axis=-1).mean(), rel=1e-12)
    assert doc["rows"] == 12


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7), (2, 2, 3, 7)])
def test_every_rank(cli, tmp_path, shape):
    probs = _probs(shape, seed=4)
    np.save(tmp_path / "p.npy", probs)
    doc = cli("entropy", tmp_path / "p.npy", "--json", "--per-row").json()
    expected = np.atleast_1d(stats.entropy(probs, axis=-1)).reshape(-1)
    np.testing.assert_allclose(doc["per_row"]["entropy"], expected, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_by_leading_against_scipy(cli, tmp_path, n):
    probs = _probs((2, 3, 4, 6), seed=5)  # (layers, heads, T, V): an attention tensor
    np.save(tmp_path / "att.npy", probs)
    doc = cli("entropy", tmp_path / "att.npy", "--by-leading", n, "--bits", "--json").json()
    h = stats.entropy(probs, base=2, axis=-1)  # (2, 3, 4)
    leading = h.shape[:n]
    groups = h.reshape(math.prod(leading), -1)
    assert [entry["index"] for entry in doc["by"]] == [list(i) for i in np.ndindex(*leading)]
    for entry, values in zip(doc["by"], groups):
        assert entry["count"] == values.size
        assert entry["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert entry["min"] == pytest.approx(values.min(), rel=1e-12)
        assert entry["max"] == pytest.approx(values.max(), rel=1e-12)
        if values.size > 1:
            assert entry["stderr"] == pytest.approx(values.std(ddof=1) / math.sqrt(values.size), rel=1e-10)
        else:
            assert entry["stderr"] is None
    table = cli("entropy", tmp_path / "att.npy", "--by-leading", n).out
    assert "index" in table and ",".join("0" * 1) in table


def test_by_leading_needs_the_axes(cli, tmp_path):
    np.save(tmp_path / "p.npy", _probs((4, 6)))
    run = cli("entropy", tmp_path / "p.npy", "--by-leading", 2)
    assert run.code == 2
    assert run.err.startswith("klcli: error:") and "--by-leading 2 needs an array of rank >= 3" in run.err


def test_no_rows_is_an_error(cli, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    run = cli("entropy", tmp_path / "empty.npy")
    assert run.code == 2 and run.err.strip() == f"klcli: error: P ({tmp_path / 'empty.npy'}): holds no rows"


def test_bounds_and_one_hot(cli):
    doc = cli("entropy", "1,0,0;0,1,0;0.2,0.3,0.5", "--json", "--per-row").json()
    assert doc["per_row"]["entropy"][:2] == [0.0, 0.0]
    assert doc["per_row"]["effective_support"][:2] == [1.0, 1.0]
    assert all(h <= math.log(3) + 1e-15 for h in doc["per_row"]["entropy"])
    uniform = cli("entropy", "0.25,0.25,0.25,0.25", "--json").json()
    assert uniform["value"] == pytest.approx(math.log(4), rel=1e-15)
    assert uniform["normalized_entropy"]["mean"] == pytest.approx(1.0, rel=1e-15)
    assert uniform["effective_support"]["mean"] == pytest.approx(4.0, rel=1e-14)


def test_outputs_and_checks(cli):
    probs = "0.5,0.5;0.9,0.1"
    expected = stats.entropy([[0.5, 0.5], [0.9, 0.1]], base=2, axis=-1)
    quiet = cli("entropy", probs, "--bits", "-q")
    assert quiet.code == 0 and float(quiet.out) == pytest.approx(expected.mean(), rel=1e-15)
    csv = cli("entropy", probs, "--format", "csv").out.splitlines()
    assert csv[0] == "row,entropy,normalized_entropy,effective_support"
    failed = cli("entropy", probs, "--check", "normalized_entropy.max<0.9", "--json")
    assert failed.code == 1 and failed.json()["checks"][0]["actual"] == pytest.approx(1.0)
    assert cli("entropy", probs, "--check", "value<1").code == 0


def test_run_from_python():
    import klcli

    doc = klcli.run("entropy", np.array([[0.5, 0.5], [1.0, 0.0]]), base=2)
    assert doc["value"] == pytest.approx(0.5)
    by = klcli.run("entropy", _probs((2, 3, 4)), by_leading=1)["by"]
    assert [entry["count"] for entry in by] == [3, 3]


@pytest.mark.slow
def test_one_off_imports_no_scipy():
    """scipy is the samples extra's: entropy, and kl without --samples, never import it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from klcli.cli import main\n"
        "codes = [main(['entropy', '0.5,0.5', '-q']), main(['kl', '0.5,0.5', '0.9,0.1', '-q']),\n"
        "         main(['perplexity', '--kind', 'logprobs', '--bytes', '3', '-q', '--', '-1,-2'])]\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'rich', 'pyarrow'})\n"
        "print([int(c) for c in codes], heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[0, 0, 0] []"


@pytest.mark.slow
def test_bounds_hold_for_any_distribution():
    """0 ≤ H ≤ log V and scipy's figure. Rows of total weight below ~1e-40 are left out: there log w ≈ −100 and
    H of a one-hot row comes out 1.4e-14 (an ulp of log w), past the 1e-14 absolute bound (a known limit)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    import klcli

    @settings(deadline=None)  # an example may take longer than 200 ms on a loaded machine; that is no failure
    @given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                  elements=st.floats(0, 1e3, allow_subnormal=False)).filter(lambda a: (a.sum(axis=1) > 1e-3).all()))
    def check(weights):
        doc = klcli.run("entropy", weights, normalize=True, per_row=True)
        h = np.array(doc["per_row"]["entropy"])
        vocab = weights.shape[1]
        assert (h >= 0).all() and (h <= math.log(vocab) * (1 + 1e-12) + 1e-15).all()
        np.testing.assert_allclose(h, stats.entropy(weights, axis=-1), rtol=1e-9, atol=1e-14)

    check()
