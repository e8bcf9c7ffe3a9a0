"""The API and the CLI give the same figures on the sample data (one kernel path, not two)."""

from __future__ import annotations

import numpy as np
import pytest

import klcli
from tests.conftest import SAMPLES


def _close(api_values, cli_values):
    np.testing.assert_allclose(np.asarray(api_values, dtype=np.float64), np.asarray(cli_values, dtype=np.float64),
                               rtol=1e-12, atol=0)


def test_kl_xent_js_on_sample_files(cli):
    teacher, student = SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy"
    run = cli("kl", teacher, student, "--logits", "--per-row", "--json", "--bits", "--temperature", "2")
    _close(klcli.kl(klcli.read(teacher), klcli.read(student), kind="logits", base=2, temperature=2.0),
           run.json()["per_row"]["kl"])
    p, q = SAMPLES / "p.csv", SAMPLES / "q.csv"
    run = cli("xent", p, q, "--per-row", "--json")
    _close(klcli.cross_entropy(klcli.read(p), klcli.read(q)), run.json()["per_row"]["cross_entropy"])
    run = cli("js", p, q, "--per-row", "--json", "--weights", "0.3,0.7")
    _close(klcli.js(klcli.read(p), klcli.read(q), weights=(0.3, 0.7)), run.json()["per_row"]["js_divergence"])
    run = cli("kl", p, q, "--per-row", "--json", "--direction", "reverse")
    _close(klcli.kl(klcli.read(p), klcli.read(q), direction="reverse"), run.json()["per_row"]["kl_reverse"])


@pytest.mark.parametrize("shift", [False, True])
def test_perplexity_on_sample_files(cli, shift):
    logits, labels = SAMPLES / "lm_logits.npy", SAMPLES / "lm_labels.npy"
    run = cli("perplexity", logits, "--labels", labels, "--json", "--per-row", *(["--shift"] if shift else []))
    document = run.json()
    result = klcli.perplexity(klcli.read(logits), klcli.read(labels), shift=shift)
    _close([result.perplexity, result.nll], [document["perplexity"], document["nll"]])
    assert (result.tokens, result.sequences) == (document["tokens"], document["sequences"])
    _close(result.per_sequence, document["per_row"]["perplexity"])


def test_gaussian_on_sample_files(cli):
    run = cli("gaussian", "--mu1", "0,0,0", "--mu2", "1,0,-1", "--cov1", SAMPLES / "cov1.npy", "--cov2",
              SAMPLES / "cov2.npy", "--json")
    value = klcli.gaussian_kl([0, 0, 0], [1, 0, -1], cov1=klcli.read(SAMPLES / "cov1.npy"),
                              cov2=klcli.read(SAMPLES / "cov2.npy"))
    _close(value, run.json()["value"])
