"""perplexity and xent --labels against an independent float64 reference and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SAMPLES

special = pytest.importorskip("scipy.special")

LOGITS, LABELS = SAMPLES / "lm_logits.npy", SAMPLES / "lm_labels.npy"


def _reference(logits, labels, ignore_index=-100, smoothing=0.0, temperature=1.0):
    """Per-token loss (nats) of the counted positions, by scipy's log_softmax in float64."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1, logits.shape[-1]) / temperature
    y = np.asarray(labels).reshape(-1)
    keep = y != ignore_index
    log_p = special.log_softmax(z[keep], axis=1)
    nll = -log_p[np.arange(keep.sum()), y[keep]]
    return (1 - smoothing) * nll + smoothing * -log_p.mean(axis=1), keep


@pytest.fixture
def lm(tmp_path):
    logits = np.load(LOGITS)
    labels = np.load(LABELS).copy()
    labels[0, 3] = labels[2, 10] = -100
    np.save(tmp_path / "labels.npy", labels)
    return logits, labels, tmp_path / "labels.npy"


def test_every_figure_against_a_reference(cli, lm):
    logits, labels, labels_path = lm
    doc = cli("perplexity", LOGITS, "--labels", labels_path, "--json", "--per-row").json()
    nll, keep = _reference(logits, labels)
    assert doc["tokens"] == 46 and doc["sequences"] == 3 and doc["rows"] == 48
    assert doc["value"] == doc["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert doc["nll"] == pytest.approx(nll.mean(), rel=1e-12)
    assert doc["nll_stderr"] == pytest.approx(np.std(nll, ddof=1) / math.sqrt(nll.size), rel=1e-12)
    assert doc["bits_per_token"] == pytest.approx(nll.mean() / math.log(2), rel=1e-12)
    assert doc["summary"]["p90"] == pytest.approx(np.percentile(nll, 90), rel=1e-12)
    sequence = np.repeat(np.arange(3), 16)[keep]
    per_seq = np.array([nll[sequence == s].mean() for s in range(3)])
    np.testing.assert_allclose(doc["per_row"]["nll"], per_seq, rtol=1e-12)
    np.testing.assert_allclose(doc["per_row"]["perplexity"], np.exp(per_seq), rtol=1e-12)
    assert doc["per_row"]["tokens"] == [15, 16, 15]
    assert doc["mean_sequence_perplexity"] == pytest.approx(np.exp(per_seq).mean(), rel=1e-12)


def test_two_dimensional_inputs_and_base_2(cli, tmp_path):
    logits = np.load(LOGITS)[1]
    labels = np.load(LABELS)[1]
    np.save(tmp_path / "z.npy", logits)
    np.save(tmp_path / "y.npy", labels)
    doc = cli("perplexity", tmp_path / "z.npy", "--labels", tmp_path / "y.npy", "--base", "2", "--json").json()
    nll, _ = _reference(logits, labels)
    assert doc["sequences"] == 1 and doc["unit"] == "bits"
    assert doc["nll"] == pytest.approx(nll.mean() / math.log(2), rel=1e-12)
    assert doc["value"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)  # always from nats
    inline = cli("perplexity", "0,0;0,1.0986122886681098", "--labels", "0,1", "-q")  # ln 2 and ln(4/3)
    assert float(inline.out) == pytest.approx(math.exp((math.log(2) + math.log(4 / 3)) / 2), rel=1e-12)


def test_shift_is_the_hugging_face_convention(cli):
    logits, labels = np.load(LOGITS), np.load(LABELS)
    doc = cli("perplexity", LOGITS, "--labels", LABELS, "--shift", "--json").json()
    nll, _ = _reference(logits[:, :-1], labels[:, 1:])
    assert doc["tokens"] == 45
    assert doc["value"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)


def test_perplexity_equals_exp_of_xent(cli):
    ppl = float(cli("perplexity", LOGITS, "--labels", LABELS, "-q").out)
    xent = float(cli("xent", LOGITS, "--labels", LABELS, "-q").out)
    assert ppl == pytest.approx(math.exp(xent), rel=1e-13)


def test_logprob_routes_agree(cli, tmp_path):
    from_logits = cli("perplexity", LOGITS, "--labels", LABELS, "--json", "--per-row").json()
    grouped = cli("perplexity", f"{SAMPLES / 'token_logprobs.csv'}:logprob", "--kind", "logprobs", "--group", "doc",
                  "--json", "--per-row").json()
    assert grouped["value"] == pytest.approx(from_logits["value"], rel=1e-12)
    assert grouped["sequences"] == 3
    np.testing.assert_allclose(grouped["per_row"]["perplexity"], from_logits["per_row"]["perplexity"], rtol=1e-12)
    # The same log-probs as a 2-D array padded with NaN: one row per sequence.
    logits, labels = np.load(LOGITS).astype(np.float64), np.load(LABELS)
    picked = np.take_along_axis(special.log_softmax(logits, axis=-1), labels[..., None], axis=-1)[..., 0]
    picked[1, 12:] = np.nan
    np.save(tmp_path / "padded.npy", picked)
    padded = cli("perplexity", tmp_path / "padded.npy", "--kind", "logprobs", "--json", "--per-row").json()
    assert padded["tokens"] == 44 and padded["per_row"]["tokens"] == [16, 12, 16]
    assert padded["value"] == pytest.approx(math.exp(-np.nanmean(picked)), rel=1e-12)
    probs = cli("perplexity", "0.5,0.25", "--kind", "probs", "-q")
    assert float(probs.out) == pytest.approx(math.sqrt(8), rel=1e-15)


def test_check_on_perplexity(cli):
    assert cli("perplexity", LOGITS, "--labels", LABELS, "--check", "perplexity<20", "-q").code == 0
    assert cli("perplexity", LOGITS, "--labels", LABELS, "--check", "perplexity<2", "-q").code == 1


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_against_torch_cross_entropy(cli, lm, smoothing):
    torch = pytest.importorskip("torch")
    logits, labels, labels_path = lm
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits.astype(np.float64)).reshape(-1, 50), torch.from_numpy(labels).reshape(-1),
        ignore_index=-100, label_smoothing=smoothing).item()
    got = float(cli("xent", LOGITS, "--labels", labels_path, "--label-smoothing", str(smoothing), "-q").out)
    assert got == pytest.approx(expected, rel=1e-9)
    reference, _ = _reference(logits, labels, smoothing=smoothing)
    assert got == pytest.approx(reference.mean(), rel=1e-12)


def test_temperature_and_ignore_index(cli, tmp_path):
    logits, labels = np.load(LOGITS), np.load(LABELS).copy()
    labels[:, 0] = 7777
    np.save(tmp_path / "y.npy", labels)
    doc = cli("perplexity", LOGITS, "--labels", tmp_path / "y.npy", "--ignore-index", "7777", "-T", "1.5",
              "--json").json()
    nll, _ = _reference(logits, labels, ignore_index=7777, temperature=1.5)
    assert doc["tokens"] == 45 and doc["value"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)


@pytest.mark.parametrize(("args", "message"), [
    (("--labels", "bad_range.npy"), "logits (lm_logits.npy): the label at position 17 is 50, outside the vocabulary "
                                    "[0, 50) (ignored positions use --ignore-index -100)"),
    (("--labels", "short.npy"), "labels (short.npy) have shape (3, 15) but the logits (lm_logits.npy) have shape "
                                "(3, 16, 50); labels need the logits' leading shape (3, 16)"),
    (("--labels", "ignored.npy"), "lm_logits.npy: no tokens were counted (every label is --ignore-index -100, or "
                                  "every value is padding); there is nothing to score"),
    (("--labels", "floats.npy"), "labels (floats.npy): position 2 holds 2.5; labels must be integer token ids"),
    ((), "logits need --labels IDS (the observed token ids); for per-token log-probabilities use --kind logprobs"),
])
def test_errors(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    labels = np.load(LABELS)
    bad = labels.copy()
    bad[1, 1] = 50
    np.save("bad_range.npy", bad)
    np.save("short.npy", labels[:, :15])
    np.save("ignored.npy", np.full_like(labels, -100))
    floats = labels.astype(float)
    floats[0, 2] = 2.5
    np.save("floats.npy", floats)
    np.save("lm_logits.npy", np.load(LOGITS))
    run = cli("perplexity", "lm_logits.npy", *args)
    assert run.code == 2 and run.out == ""
    assert run.err == f"klcli: error: {message}\n"


def test_non_finite_logits_are_an_error(cli, tmp_path):
    logits = np.load(LOGITS).copy()
    logits[0, 5, 3] = np.nan
    np.save(tmp_path / "z.npy", logits)
    run = cli("perplexity", tmp_path / "z.npy", "--labels", LABELS)
    assert run.code == 2
    assert run.err == (f"klcli: error: logits ({tmp_path / 'z.npy'}): row 5 has nan at column 3; "
                       "logits must be finite numbers\n")


def test_labels_of_unknown_length_that_run_short(cli, tmp_path):
    labels = np.load(LABELS).reshape(-1)[:40]
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(map(str, labels)) + "\n")
    run = cli("perplexity", LOGITS, "--labels", f"{tmp_path / 'ids.csv'}:id")
    assert run.code == 2
    assert run.err.startswith(f"klcli: error: labels ({tmp_path / 'ids.csv'}) (shape (?,)) do not match the logits "
                              f"({LOGITS}) (shape (3, 16, 50)): ")
    assert "has 48 rows but" in run.err and "has 40" in run.err


def test_rows_are_the_inputs_rows_with_ignored_positions(cli, tmp_path):
    """argmax is the position in the input, not the rank among scored tokens; an all-padding sequence is a null row."""
    rng = np.random.default_rng(8)
    logits = rng.normal(0, 3, size=(4, 32, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, size=(4, 32))
    labels[0, 20:] = labels[1, :] = labels[3, 10:] = -100  # sequence 1 is all padding
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    losses, keep = _reference(logits, labels)
    positions = np.flatnonzero(keep)
    for command in ("perplexity", "xent"):
        doc = cli(command, tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--json", "--per-row").json()
        assert doc["summary"]["argmax"] == int(positions[np.argmax(losses)]) != int(np.argmax(losses))
        assert doc["summary"]["max"] == pytest.approx(losses.max(), rel=1e-9)
        assert doc["per_row"]["tokens"] == [20, 0, 32, 10]
        per_row = doc["per_row"]["nll" if command == "perplexity" else "cross_entropy"]
        assert per_row[1] is None
        assert per_row[3] == pytest.approx(losses[-10:].mean(), rel=1e-9)
    assert doc["tokens"] == 62
    doc = cli("perplexity", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npy", "--json").json()
    assert doc["sequences"] == 3
    # the tokens' own log-probabilities, padded with NaN: argmax is row·T + column
    token_logprobs = np.full((4, 32), np.nan)
    token_logprobs[keep.reshape(4, 32)] = -losses
    np.save(tmp_path / "lp.npy", token_logprobs)
    doc = cli("perplexity", tmp_path / "lp.npy", "--kind", "logprobs", "--json", "--per-row").json()
    assert doc["summary"]["argmax"] == int(positions[np.argmax(losses)])
    assert doc["sequences"] == 3 and doc["per_row"]["tokens"] == [20, 0, 32, 10]


def test_padding_logits_are_never_read(cli, tmp_path):
    # A padded batch whose pad positions hold NaN and inf logits (as some dumps leave them), labels -100.
    from scipy.special import log_softmax

    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3, size=(2, 8, 50)).astype(np.float32)
    labels = rng.integers(0, 50, size=(2, 8))
    labels[0, 5:], labels[1, 6:] = -100, -100
    logits[0, 5:], logits[1, 6:] = np.nan, np.inf
    np.save(tmp_path / "z.npy", logits)
    np.save(tmp_path / "l.npy", labels)
    real = labels != -100
    nll = -log_softmax(logits[real].astype(np.float64), axis=-1)[np.arange(real.sum()), labels[real]]
    for command in (["perplexity"], ["xent"]):
        run = cli(*command, tmp_path / "z.npy", "--labels", tmp_path / "l.npy", "--json")
        assert run.code == 0, run.err
        doc = run.json()
        assert doc["tokens"] == int(real.sum())
        assert doc["perplexity"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-12)
