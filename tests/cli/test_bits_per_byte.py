"""perplexity --bytes/--words: lm-evaluation-harness's bits_per_byte, byte and word perplexity, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _weighted_mean(items):
    """lm-evaluation-harness's weighted_mean over (log-likelihood, count) pairs, written out."""
    items = list(items)
    return sum(a for a, _ in items) / sum(b for _, b in items)


def test_hand_worked_single_sequence(cli):
    # Tokens with p = 1/2, 1/4, 1/8: Σ NLL = (1 + 2 + 3) ln 2 = 6 ln 2 nats; 3 bytes → 2 bits per byte.
    logprobs = ",".join(repr(math.log(p)) for p in (0.5, 0.25, 0.125))
    doc = cli("perplexity", "--kind", "logprobs", "--bytes", "3", "--words", "2", "--bits", "--json",
              "--", logprobs).json()
    assert doc["bits_per_byte"] == pytest.approx(2.0, rel=1e-15)
    assert doc["byte_perplexity"] == pytest.approx(4.0, rel=1e-15)
    assert doc["word_perplexity"] == pytest.approx(8.0, rel=1e-15)  # exp(6 ln 2 / 2) = 2³
    assert (doc["bytes"], doc["words"]) == (3.0, 2.0)


def test_per_sequence_counts_against_lm_eval(cli, tmp_path):
    rng = np.random.default_rng(0)
    logprobs = np.log(rng.uniform(0.05, 1.0, size=(3, 5)))
    logprobs[1, 3:] = np.nan  # padding
    bytes_, words = np.array([17, 9, 30]), np.array([4, 2, 6])
    np.save(tmp_path / "lp.npy", logprobs)
    np.save(tmp_path / "bytes.npy", bytes_)
    doc = cli("perplexity", tmp_path / "lp.npy", "--kind", "logprobs", "--bytes", tmp_path / "bytes.npy",
              "--words", "4,2,6", "--json").json()
    loglik = [float(np.nansum(row)) for row in logprobs]  # lm-eval's per-document log-likelihoods
    assert doc["bits_per_byte"] == pytest.approx(-_weighted_mean(zip(loglik, bytes_)) / math.log(2), rel=1e-13)
    assert doc["byte_perplexity"] == pytest.approx(math.exp(-_weighted_mean(zip(loglik, bytes_))), rel=1e-13)
    assert doc["word_perplexity"] == pytest.approx(math.exp(-_weighted_mean(zip(loglik, words))), rel=1e-13)


def test_not_scaled_by_base(cli):
    args = ("perplexity", "--kind", "logprobs", "--bytes", "5", "--words", "3", "--json", "--", "-1.5,-0.25")
    nats, bans = cli(*args).json(), cli(*args[:-2], "--base", "10", *args[-2:]).json()
    for key in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
        assert nats[key] == bans[key]
    assert nats["bits_per_byte"] == pytest.approx(1.75 / (5 * math.log(2)), rel=1e-15)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--bytes", "1,2", "--bytes has 2 counts but there are 1 sequences"),
    ("--words", "-3", "--words: counts must be finite, >= 0 and not all 0"),
    ("--bytes", "0", "--bytes: counts must be finite, >= 0 and not all 0"),
])
def test_counts_refused(cli, option, value, message):
    run = cli("perplexity", "--kind", "logprobs", option, value, "--", "-1.0,-2.0")
    assert run.code == 2
    assert run.err.startswith("klcli: error: ") and message in run.err
