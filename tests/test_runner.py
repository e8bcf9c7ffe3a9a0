"""klcli.run / klcli.compare / klcli.rlhf: the CLI's --json document, from Python, key by key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import klcli
from klcli.errors import UsageError
from tests.conftest import SAMPLES

S = str(SAMPLES)
TEACHER, STUDENT = f"{S}/teacher_logits.npy", f"{S}/student_logits.npy"
LM, IDS = f"{S}/lm_logits.npy", f"{S}/lm_labels.npy"
REF_OUT = os.path.join(tempfile.mkdtemp(prefix="klcli-test-"), "lm.ref.safetensors")  # written by reference

# (argv of the CLI, the same as klcli.run's arguments)
CASES = [
    (["kl", f"{S}/p.csv", f"{S}/q.csv", "--per-row"], ("kl", f"{S}/p.csv", f"{S}/q.csv"), {"per_row": True}),
    (["kl", TEACHER, STUDENT, "--logits", "--direction", "both", "--bits", "-T", "2", "--t2-scale"],
     ("kl", TEACHER, STUDENT), {"logits": True, "direction": "both", "bits": True, "temperature": 2.0,
                                "t2_scale": True}),
    (["xent", f"{S}/p.parquet", f"{S}/q.parquet", "--base", "10"], ("xent", f"{S}/p.parquet", f"{S}/q.parquet"),
     {"base": 10}),
    (["xent", LM, "--labels", IDS, "--shift", "--per-row"], ("xent", LM), {"labels": IDS, "shift": True,
                                                                          "per_row": True}),
    (["js", f"{S}/p.npy", f"{S}/q.npy", "--weights", "0.3,0.7", "--bits", "--per-row"],
     ("js", f"{S}/p.npy", f"{S}/q.npy"), {"weights": (0.3, 0.7), "base": 2, "per_row": True}),
    (["perplexity", LM, "--labels", IDS, "--per-row", "--check", "perplexity<100"], ("perplexity", LM),
     {"labels": IDS, "per_row": True, "check": ["perplexity<100"]}),
    (["perplexity", f"{S}/token_logprobs.csv:logprob", "--kind", "logprobs", "--group", "doc"],
     ("perplexity", f"{S}/token_logprobs.csv:logprob"), {"kind": "logprobs", "group": "doc"}),
    (["perplexity", LM, "--labels", IDS, "--bytes", "1,2,3", "--words", "40"], ("perplexity", LM),
     {"labels": IDS, "bytes": "1,2,3", "words": 40}),
    (["rlhf", f"{S}/rlhf.npz:policy", f"{S}/rlhf.npz:ref", "--behavior", f"{S}/rlhf.npz:ref", "--per-token"],
     ("rlhf", f"{S}/rlhf.npz:policy", f"{S}/rlhf.npz:ref"), {"behavior": f"{S}/rlhf.npz:ref", "per_token": True}),
    (["compare", TEACHER, STUDENT, "--top-k", "3", "--worst", "4", "--per-row"], ("compare", TEACHER, STUDENT),
     {"top_k": 3, "worst": 4, "per_row": True}),
    (["rlhf", f"{S}/rlhf.npz:policy", f"{S}/rlhf.npz:ref", "--reward", f"{S}/rlhf.npz:reward", "--per-row"],
     ("rlhf", f"{S}/rlhf.npz:policy", f"{S}/rlhf.npz:ref"), {"reward": f"{S}/rlhf.npz:reward", "per_row": True}),
    (["rlhf", "--policy-logits", f"{S}/rlhf.npz:policy_logits", "--ref-logits", f"{S}/rlhf.npz:ref_logits",
      "--labels", f"{S}/rlhf.npz:tokens", "--estimator", "k2"], ("rlhf",),
     {"policy_logits": f"{S}/rlhf.npz:policy_logits", "ref_logits": f"{S}/rlhf.npz:ref_logits",
      "labels": f"{S}/rlhf.npz:tokens", "estimator": "k2"}),
    (["entropy", LM, "--logits", "--by-leading", "1", "--bits", "--per-row"], ("entropy", LM),
     {"logits": True, "by_leading": 1, "bits": True, "per_row": True}),
    (["gaussian", "--mu1", "0", "--sigma1", "1", "--mu2", "1", "--sigma2", "2"], ("gaussian",),
     {"mu1": 0, "sigma1": 1, "mu2": 1, "sigma2": 2}),
    (["gaussian", f"{S}/gaussians.csv", "--direction", "reverse", "--per-row"], ("gaussian", f"{S}/gaussians.csv"),
     {"direction": "reverse", "per_row": True}),
    (["gaussian", "--vae", "--mu", f"{S}/vae.npz:mu", "--logvar", f"{S}/vae.npz:logvar"], ("gaussian",),
     {"vae": True, "mu": f"{S}/vae.npz:mu", "logvar": f"{S}/vae.npz:logvar"}),
    (["reference", LM, "--labels", IDS, "--top-k", "4", "-o", REF_OUT, "--per-row"], ("reference", LM),
     {"labels": IDS, "top_k": 4, "output": REF_OUT, "per_row": True}),
]


@pytest.mark.parametrize(("argv", "args", "options"), CASES, ids=[" ".join(case[0][:1] + case[0][3:6])
                                                                  for case in CASES])
def test_run_returns_the_clis_json_document(cli, argv, args, options):
    printed = cli(*argv, "--json")
    assert printed.code == 0, printed.err
    assert klcli.run(*args, **options) == printed.json()


def test_samples_and_fit_from_python_equal_the_cli(cli, tmp_path):
    pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(300, 2)), rng.normal(size=(200, 2)) + 0.5
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    pairs = [(["kl", "--samples", tmp_path / "p.npy", tmp_path / "q.npy", "--k", "3"],
              ("kl", p, q), {"samples": True, "k": 3}),
             (["entropy", "--samples", tmp_path / "p.npy", "--bits"], ("entropy", p), {"samples": True, "bits": True}),
             (["gaussian", "--fit", tmp_path / "p.npy", tmp_path / "q.npy", "--knn"], ("gaussian",),
              {"fit": (p, q), "knn": True})]
    for argv, args, options in pairs:
        printed = cli(*argv, "--json").json()
        ours = klcli.run(*args, **options)
        for doc in (printed, ours):  # where the inputs came from differs; every figure is the same
            doc.pop("inputs")
        assert ours == printed


def test_every_command_is_covered():
    from klcli.runner import PLANNERS

    assert {args[0] for _, args, _ in CASES} == set(PLANNERS)


def test_compare_from_arrays_equals_the_cli_on_the_files(cli, tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 9, 50)).astype(np.float32)
    test = base + rng.standard_normal(base.shape).astype(np.float32) * 0.3
    labels = rng.integers(0, 50, size=(2, 9))
    for name, array in (("base", base), ("test", test), ("labels", labels)):
        np.save(tmp_path / f"{name}.npy", array)
    printed = cli("compare", tmp_path / "base.npy", tmp_path / "test.npy", "--labels", tmp_path / "labels.npy",
                  "--top-k", "3", "--json").json()
    ours = klcli.compare(base, test, labels=labels, top_k=3)
    for doc in (printed, ours):  # where the inputs came from differs (and so the candidate's default name)
        doc.pop("inputs")
        doc.pop("ranking")
        for entry in doc["tests"]:
            entry.pop("name")
    assert ours == printed


def test_rlhf_from_arrays():
    rng = np.random.default_rng(1)
    policy = np.log(rng.uniform(0.05, 0.9, size=(4, 6)))
    ref = np.log(rng.uniform(0.05, 0.9, size=(4, 6)))
    doc = klcli.rlhf(policy, ref, per_row=True)
    log_r = ref - policy
    expected = (np.expm1(log_r) - log_r).sum(axis=1)
    assert doc["estimators"]["k3"]["per_sequence"] == pytest.approx(expected.tolist(), rel=1e-13)
    assert doc["value"] == pytest.approx(expected.mean(), rel=1e-13)


def test_units_scale_information_only():
    nats = klcli.run("compare", TEACHER, STUDENT, labels=None)
    bits = klcli.run("compare", TEACHER, STUDENT, base=2)
    assert bits["unit"] == "bits" and bits["value"] == pytest.approx(nats["value"] / np.log(2), rel=1e-15)
    assert bits["js"]["p99"] == pytest.approx(nats["js"]["p99"] / np.log(2), rel=1e-15)
    assert bits["tv"] == nats["tv"] and bits["top1_agreement"] == nats["top1_agreement"]
    js_nats = klcli.run("js", f"{S}/p.npy", f"{S}/q.npy", per_row=True)
    js_bits = klcli.run("js", f"{S}/p.npy", f"{S}/q.npy", per_row=True, bits=True)
    distance = np.array(js_nats["per_row"]["js_distance"]) / np.sqrt(np.log(2))
    np.testing.assert_allclose(js_bits["per_row"]["js_distance"], distance, rtol=1e-15)
    ppl = klcli.run("perplexity", LM, labels=IDS, bits=True)
    assert ppl["perplexity"] == klcli.run("perplexity", LM, labels=IDS)["perplexity"]


def test_options_are_checked_before_any_file_is_read():
    with pytest.raises(UsageError, match="--logits and --kind probs disagree"):
        klcli.run("kl", "missing.npy", "missing.npy", logits=True, kind="probs")
    with pytest.raises(UsageError, match="--estimator 'k4'"):
        klcli.run("rlhf", "missing.npy", "missing.npy", estimator="k4")
    with pytest.raises(UsageError, match="no command 'klx'"):
        klcli.run("klx", "a", "b")
    with pytest.raises(TypeError):
        klcli.run("kl", "0.5,0.5", "0.9,0.1", no_such_option=1)


def test_import_klcli_imports_neither_rich_pyarrow_nor_typer():
    script = ("import sys, klcli\n"
              "assert 'run' in dir(klcli) and 'compare' in klcli.__all__\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pyarrow', 'typer', 'scipy'}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.replace("'", '"')) == []
