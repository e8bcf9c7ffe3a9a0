"""klcli.perplexity against a direct NumPy computation (log_softmax, gather, ignore-index, shift)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

import klcli


def _reference(logits, labels, *, ignore_index=-100, shift=False, temperature=1.0):
    """Per-sequence NLL sums and token counts, and the corpus figures, written out directly."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2:
        logits, labels = logits[None], np.asarray(labels).reshape(1, -1)
    labels = np.asarray(labels).reshape(logits.shape[:-1])
    if shift:  # Hugging Face: logits[:, :-1] against labels[:, 1:]
        logits, labels = logits[:, :-1], labels[:, 1:]
    log_p = special.log_softmax(logits / temperature, axis=-1)
    keep = labels != ignore_index
    picked = np.take_along_axis(log_p, np.where(keep, labels, 0)[..., None], axis=-1)[..., 0]
    nll = np.where(keep, -picked, 0.0)
    sums, counts = nll.sum(axis=1), keep.sum(axis=1)
    total, tokens = nll[keep].sum(), int(keep.sum())
    with np.errstate(invalid="ignore"):
        return math.exp(total / tokens), total / tokens, tokens, np.exp(sums / counts)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("shape", [(7, 11), (3, 6, 11)])
def test_logits_and_labels(shape, shift):
    rng = np.random.default_rng(11)
    logits = rng.normal(scale=3, size=shape).astype(np.float32)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    labels.reshape(-1)[[1, 4]] = -100
    result = klcli.perplexity(logits, labels, shift=shift)
    ppl, nll, tokens, per_sequence = _reference(logits, labels, shift=shift)
    assert result.perplexity == pytest.approx(ppl, rel=1e-12)
    assert result.nll == pytest.approx(nll, rel=1e-12)
    assert result.tokens == tokens and result.sequences == len(per_sequence)
    np.testing.assert_allclose(result.per_sequence, per_sequence, rtol=1e-12)
    # flat labels are accepted as well as the leading shape
    assert klcli.perplexity(logits, labels.reshape(-1), shift=shift).perplexity == result.perplexity


def test_ignore_index_temperature_and_lists():
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(2, 5, 4))
    labels = rng.integers(0, 4, size=(2, 5))
    labels[1, :] = 7  # a whole sequence ignored with ignore_index=7
    result = klcli.perplexity(logits.tolist(), labels.tolist(), ignore_index=7, temperature=2.0)
    ppl, nll, tokens, _ = _reference(logits, labels, ignore_index=7, temperature=2.0)
    assert result.perplexity == pytest.approx(ppl, rel=1e-12) and result.tokens == tokens == 5
    assert result.sequences == 1 and np.isnan(result.per_sequence[1])


def test_token_logprobs_one_and_many_sequences():
    logprobs = np.log(np.array([[0.5, 0.25, np.nan], [0.1, 0.2, 0.4]]))
    result = klcli.perplexity(logprobs, kind="logprobs")
    values = logprobs[~np.isnan(logprobs)]
    assert result.perplexity == pytest.approx(math.exp(-values.mean()), rel=1e-14)
    assert result.nll == pytest.approx(-values.mean(), rel=1e-14)
    assert (result.tokens, result.sequences) == (5, 2)
    np.testing.assert_allclose(result.per_sequence, [math.exp(-np.log([0.5, 0.25]).mean()),
                                                     math.exp(-np.log([0.1, 0.2, 0.4]).mean())], rtol=1e-14)
    single = klcli.perplexity(np.log([0.5, 0.25]), kind="logprobs")
    assert single.sequences == 1 and single.perplexity == pytest.approx(math.sqrt(8), rel=1e-14)
    probs = klcli.perplexity([0.5, 0.25], kind="probs")
    assert probs.perplexity == pytest.approx(math.sqrt(8), rel=1e-14)


def test_result_is_a_named_tuple():
    result = klcli.perplexity(np.zeros((2, 4)), [0, 1])
    ppl, nll, tokens, sequences, per_sequence = result
    assert isinstance(result, klcli.PerplexityResult) and ppl == pytest.approx(4.0)
    assert result._asdict()["tokens"] == 2


@pytest.mark.parametrize("call,error,text", [
    (lambda: klcli.perplexity(np.zeros((2, 4))), TypeError, "needs labels"),
    (lambda: klcli.perplexity(np.zeros((2, 4)), [0, 4]), ValueError, "outside the vocabulary [0, 4)"),
    (lambda: klcli.perplexity(np.zeros((2, 4)), [0, 1, 2]), ValueError, "labels have shape (3,)"),
    (lambda: klcli.perplexity(np.zeros((2, 4)), [-100, -100]), ValueError, "no tokens were counted"),
    (lambda: klcli.perplexity([-0.5, 0.2], kind="logprobs"), ValueError, "log-probabilities must be <= 0"),
    (lambda: klcli.perplexity([-0.5, np.nan], kind="logprobs"), ValueError, "only a 2-D array"),
    (lambda: klcli.perplexity([-0.5], [0], kind="logprobs"), ValueError, "labels go with kind='logits'"),
    (lambda: klcli.perplexity([-0.5], kind="logprobs", shift=True), ValueError, "shift applies to logits"),
    (lambda: klcli.perplexity(np.zeros((2, 4)), [0.5, 1]), ValueError, "integer token ids"),
])
def test_errors(call, error, text):
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value) and "--" not in str(info.value)


def test_label_outside_vocabulary_keeps_the_cli_hint_apart():
    with pytest.raises(ValueError) as info:
        klcli.perplexity(np.zeros((2, 4)), [0, 9], ignore_index=-1)
    assert "ignore_index=-1" in str(info.value)
    assert info.value.hint == "ignored positions use --ignore-index -1"
