"""Real model dumps through the CLI: probabilities passed where logits are the default, and error hints."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests import torchlike


@pytest.fixture
def softmax_pair(tmp_path):
    rng = np.random.default_rng(11)
    z = rng.normal(0, 2, (40, 2000))
    y = z + rng.normal(0, 0.5, z.shape)
    p, q = torchlike.softmax(z), torchlike.softmax(y)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    np.save(tmp_path / "ids.npy", rng.integers(0, 2000, 40))
    wide_p, wide_q = (np.asarray(a, np.float64) / np.asarray(a, np.float64).sum(1, keepdims=True) for a in (p, q))
    truth = float(np.mean(np.sum(wide_p * np.log(wide_p / wide_q), axis=1)))
    return tmp_path, truth


def test_compare_refuses_probabilities_read_as_logits_by_default(cli, softmax_pair):
    folder, truth = softmax_pair
    run = cli("compare", folder / "p.npy", folder / "q.npy", "-q")  # printed ~1e-8 with exit 0 before
    assert run.code == 2 and run.out == ""
    assert run.err == (f"klcli: error: BASE ({folder / 'p.npy'}): every row of its first block is a probability "
                       "vector (entries in [0, 1] summing to 1), but it would be read as logits, which gives wrong "
                       "figures; pass --kind probs (or --base-kind/--test-kind probs) if these are probabilities\n")
    run = cli("compare", folder / "p.npy", folder / "q.npy", "--kind", "probs", "-q")
    assert run.code == 0 and float(run.out) == pytest.approx(truth, rel=1e-9)
    run = cli("compare", folder / "p.npy", folder / "q.npy", "--base-kind", "probs", "--test-kind", "probs", "-q")
    assert run.code == 0 and float(run.out) == pytest.approx(truth, rel=1e-9)
    # Only TEST is probabilities: named as TEST.
    np.save(folder / "z.npy", np.random.default_rng(3).normal(0, 2, (40, 2000)).astype(np.float32))
    run = cli("compare", folder / "z.npy", folder / "q.npy", "-q")
    assert run.code == 2 and run.err.startswith(f"klcli: error: TEST ({folder / 'q.npy'}): every row")


def test_explicit_logits_are_read_as_asked_with_a_note(cli, softmax_pair):
    folder, truth = softmax_pair
    run = cli("compare", folder / "p.npy", folder / "q.npy", "--kind", "logits", "--json")
    assert run.code == 0
    result = run.json()
    assert result["value"] < truth / 100  # what the logits reading gives: nearly uniform rows
    assert any("BASE" in note and "read as logits, as asked" in note for note in result["notes"])
    run = cli("kl", folder / "p.npy", folder / "q.npy", "--logits", "--json")
    assert run.code == 0 and any("read as logits, as asked" in note for note in run.json()["notes"])
    # Loud as well: on standard error whatever the output, so a -q/--check gate in CI does not pass in silence.
    run = cli("kl", folder / "p.npy", folder / "q.npy", "--logits", "-q", "--check", "mean<1")
    assert run.code == 0 and float(run.out) < truth / 100
    assert run.err == "".join(f"klcli: note: {side} ({folder / name}): every row of its first block is a probability "
                              "vector (entries in [0, 1] summing to 1); read as logits, as asked\n"
                              for side, name in (("P", "p.npy"), ("Q", "q.npy")))


@pytest.mark.parametrize("args", [
    ("perplexity", "p.npy", "--labels", "ids.npy"),
    ("xent", "p.npy", "--labels", "ids.npy"),
    ("rlhf", "--policy-logits", "p.npy", "--ref-logits", "q.npy", "--labels", "ids.npy"),
])
def test_every_command_given_logits_by_default_refuses_probabilities(cli, softmax_pair, monkeypatch, args):
    folder, _ = softmax_pair
    monkeypatch.chdir(folder)
    run = cli(*args, "-q")
    assert run.code == 2
    assert "every row of its first block is a probability vector" in run.err
    assert "numpy.log" in run.err
    if args[0] != "rlhf":
        explicit = cli(*args, "--kind", "logits", "--json")
        assert explicit.code == 0 and any("as asked" in note for note in explicit.json()["notes"])


def test_real_logits_and_log_probabilities_are_not_mistaken_for_probabilities(cli, softmax_pair, monkeypatch):
    folder, _ = softmax_pair
    monkeypatch.chdir(folder)
    np.save("lp.npy", np.log(np.load("p.npy")))
    np.save("lq.npy", np.log(np.load("q.npy")))
    assert cli("compare", "lp.npy", "lq.npy", "-q").code == 0
    assert cli("perplexity", "lp.npy", "--labels", "ids.npy", "-q").code == 0


def test_compare_normalize_and_epsilon(cli, tmp_path):
    rows = np.array([[0.2, 0.3, 0.5 + 1e-5], [0.25, 0.25, 0.5]])
    np.save(tmp_path / "off.npy", rows)
    np.save(tmp_path / "q.npy", np.array([[0.3, 0.3, 0.4], [0.1, 0.0, 0.9]]))
    run = cli("compare", tmp_path / "off.npy", tmp_path / "q.npy", "--kind", "probs", "-q")
    assert run.code == 2 and "pass --normalize" in run.err  # an option compare now has
    run = cli("compare", tmp_path / "off.npy", tmp_path / "q.npy", "--kind", "probs", "--normalize", "--json",
              "--per-row")
    assert run.code == 0
    p = rows / rows.sum(1, keepdims=True)
    q = np.array([[0.3, 0.3, 0.4], [0.1, 0.0, 0.9]])
    assert run.json()["per_row"]["kl"][0] == pytest.approx(np.sum(p[0] * np.log(p[0] / q[0])), rel=1e-9)
    run = cli("compare", tmp_path / "off.npy", tmp_path / "q.npy", "--kind", "probs", "--normalize",
              "--epsilon", "0.01", "--json", "--per-row")
    assert run.code == 0
    smooth_p = (p + 0.01) / (p + 0.01).sum(1, keepdims=True)
    smooth_q = (q + 0.01) / (q + 0.01).sum(1, keepdims=True)
    want = np.sum(smooth_p * np.log(smooth_p / smooth_q), axis=1)
    assert np.allclose(run.json()["per_row"]["kl"], want, rtol=1e-9)
    assert any("--epsilon 0.01" in note for note in run.json()["notes"])


def _options(cli, command: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", cli(command, "--help").out))


# Inputs that make each command raise the errors whose messages suggest options.
_HINTED = {
    "kl": [("neg.npy", "q.npy"), ("off.npy", "q.npy"), ("lp_bad.npy", "q.npy", "--kind", "logprobs"),
           ("p.npy", "zero.npy")],
    "xent": [("neg.npy", "q.npy"), ("off.npy", "q.npy"), ("p.npy", "--labels", "ids.npy")],
    "js": [("neg.npy", "q.npy"), ("off.npy", "q.npy")],
    "compare": [("neg.npy", "q.npy", "--kind", "probs"), ("off.npy", "q.npy", "--kind", "probs"), ("p.npy", "q.npy"),
                ("off.npy", "q.npy", "--base-kind", "probs", "--test-kind", "probs"),
                ("lp_bad.npy", "q.npy", "--kind", "logprobs")],
    "perplexity": [("p.npy", "--labels", "ids.npy"), ("p.npy",), ("ids.npy", "--kind", "probs", "--labels", "ids.npy")],
    "rlhf": [("--policy-logits", "p.npy", "--ref-logits", "q.npy", "--labels", "ids.npy")],
}


@pytest.mark.parametrize("command", sorted(_HINTED))
def test_every_option_an_error_suggests_is_an_option_of_that_command(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    p = torchlike.softmax(np.random.default_rng(2).normal(0, 2, (4, 50)))
    np.save("p.npy", p)
    np.save("q.npy", torchlike.softmax(np.random.default_rng(3).normal(0, 2, (4, 50))))
    np.save("neg.npy", np.asarray(p, np.float64) - 0.01)
    np.save("off.npy", np.asarray(p, np.float64) * (1 + 1e-4))
    np.save("lp_bad.npy", np.log(np.asarray(p, np.float64)) + 1e-3)
    zero = np.asarray(p, np.float64).copy()
    zero[:, 0] = 0
    np.save("zero.npy", zero / zero.sum(1, keepdims=True))
    np.save("ids.npy", np.arange(4))
    options = _options(cli, command)
    for args in _HINTED[command]:
        run = cli(command, *args)
        assert run.code == 2 or run.err, (command, args)
        suggested = set(re.findall(r"--[a-z][a-z0-9-]*", run.err))
        assert suggested <= options, (command, args, run.err, suggested - options)


def _torch_zip(path, name="archive"):
    """The layout torch.save writes (a zip of a pickle and raw storages), without torch."""
    import pickle
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", pickle.dumps({"logits": "storage 0"}, protocol=2))
        archive.writestr(f"{name}/byteorder", "little")
        archive.writestr(f"{name}/data/0", np.zeros(16, np.float32).tobytes())
        archive.writestr(f"{name}/version", "3\n")
        archive.writestr(f"{name}/.data/serialization_id", "0123456789")


_TORCH_MESSAGE = ("is a PyTorch checkpoint (torch.save writes pickles), and klcli never unpickles a file (a pickle "
                  "can run code); save the tensor as an array: numpy.save('x.npy', tensor.float().numpy()), or "
                  "safetensors.torch.save_file({'x': tensor}, 'x.safetensors')")


@pytest.mark.parametrize("name", ["logits.pt", "model.pth", "dump.npz", "weights.bin"])
def test_a_torch_zip_checkpoint_is_named_not_taken_for_an_npz(cli, tmp_path, name):
    _torch_zip(tmp_path / name, name.split(".")[0])
    run = cli("kl", tmp_path / name, "0.5,0.5", "--logits")  # "holds 0 arrays" before
    assert run.code == 2
    assert run.err == f"klcli: error: {tmp_path / name}: {_TORCH_MESSAGE}\n"


@pytest.mark.parametrize("name", ["legacy.pt", "legacy.pth", "pytorch_model.bin"])
def test_a_legacy_torch_pickle_is_named(cli, tmp_path, name):
    import pickle

    (tmp_path / name).write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=2))
    run = cli("compare", tmp_path / name, "0.5,0.5")
    assert run.code == 2
    assert run.err == f"klcli: error: {tmp_path / name}: {_TORCH_MESSAGE}\n"
    (tmp_path / "notes.pt").write_bytes(b"hello")  # not a pickle: the usual unknown-type error
    assert "unknown file type '.pt'" in cli("kl", tmp_path / "notes.pt", "1").err


def test_a_real_torch_save_file_is_named(cli, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.randn(4, 10), tmp_path / "t.pt")
    torch.save({"logits": torch.randn(4, 10)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("t.pt", "legacy.pt"):
        run = cli("kl", tmp_path / name, "0.5,0.5")
        assert run.err == f"klcli: error: {tmp_path / name}: {_TORCH_MESSAGE}\n"


def test_quoted_numbers_are_data_not_a_header(cli, tmp_path):
    import csv

    rows = [[0.5, 0.5], [0.25, 0.75], [0.1, 0.9]]
    with open(tmp_path / "quoted.csv", "w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    with open(tmp_path / "named.csv", "w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows([["heads", "tails"], *rows])
    q = np.array([0.9, 0.1])
    want = np.mean([np.sum(np.array(r) * np.log(np.array(r) / q)) for r in rows])
    for name in ("quoted.csv", "named.csv"):  # quoted.csv: the first row was dropped as a header before
        run = cli("kl", tmp_path / name, "0.9,0.1", "--json")
        assert run.code == 0, run.err
        assert run.json()["rows"] == 3 and run.json()["value"] == pytest.approx(want, rel=1e-12)
        assert run.json()["inputs"][0]["shape"] == [3, 2]
    run = cli("kl", f"{tmp_path / 'named.csv'}:tails,heads", "0.1,0.9", "-q")  # quoted names, unquoted
    assert run.code == 0 and float(run.out) == pytest.approx(want, rel=1e-12)


def test_a_one_column_table_reports_the_shape_read(cli, tmp_path):
    from tests.conftest import SAMPLES

    run = cli("perplexity", f"{SAMPLES / 'token_logprobs.csv'}:logprob", "--kind", "logprobs", "--json")
    tokens = len((SAMPLES / "token_logprobs.csv").read_text().strip().splitlines()) - 1
    assert run.json()["inputs"][0]["shape"] == [tokens]  # [1] before
    (tmp_path / "lp.csv").write_text("policy,ref\n-1.0,-1.2\n-0.5,-0.4\n-2.0,-2.5\n")
    run = cli("rlhf", f"{tmp_path / 'lp.csv'}:policy", f"{tmp_path / 'lp.csv'}:ref", "--json")
    assert [entry["shape"] for entry in run.json()["inputs"]] == [[3], [3]]  # [null] before


def test_sample_data_holds_every_format(cli):
    import json

    from tests.conftest import SAMPLES

    # safetensors: the teacher in float32, the student in bfloat16 (its float32 logits rounded to nearest even).
    teacher = np.load(SAMPLES / "teacher_logits.npy").astype(np.float64)
    student = torchlike.round_bf16(np.load(SAMPLES / "student_logits.npy")).astype(np.float64)
    run = cli("kl", f"{SAMPLES / 'models.safetensors'}:teacher", f"{SAMPLES / 'models.safetensors'}:student",
              "--logits", "--json")
    assert [entry["dtype"] for entry in run.json()["inputs"]] == ["float32", "bfloat16"]
    log_p = teacher - np.log(np.exp(teacher).sum(1, keepdims=True))
    log_q = student - np.log(np.exp(student).sum(1, keepdims=True))
    want = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
    assert run.json()["value"] == pytest.approx(want, rel=1e-9)
    # OpenAI-style: perplexity is exp of minus the mean sampled log-probability, read straight from the JSON.
    content = json.loads((SAMPLES / "reference.json").read_text())["choices"][0]["logprobs"]["content"]
    run = cli("perplexity", SAMPLES / "reference.json", "-q")
    assert float(run.out) == pytest.approx(np.exp(-np.mean([item["logprob"] for item in content])), rel=1e-12)
    lines = (SAMPLES / "candidate.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["choices"][0]["logprobs"]["content"] for line in lines)
    # llama.cpp: the base file is recognised by its magic, carries its 14 scored rows' tokens, and compares.
    run = cli("compare", SAMPLES / "base.kld", SAMPLES / "ported_logits.npy", "--json")
    assert run.code == 0 and run.json()["inputs"][0]["format"] == "llama-kl-base"
    assert run.json()["rows"] == 14 and run.json()["tokens"] == 14


def test_a_column_as_one_distribution_reports_its_length(cli):
    from tests.conftest import SAMPLES

    run = cli("kl", f"{SAMPLES / 'p.csv'}:o0", f"{SAMPLES / 'q.csv'}:o0", "--normalize", "--json")
    rows = len((SAMPLES / "p.csv").read_text().strip().splitlines()) - 1
    assert [entry["shape"] for entry in run.json()["inputs"]] == [[rows], [rows]]  # [1] before


def test_a_stray_carriage_return_in_the_first_line_is_still_one_clear_outcome(cli, tmp_path):
    (tmp_path / "cr.csv").write_bytes(b"\r,b,c\n0.25,0.25,0.5\n0.1,0.6,0.3\n")  # found by the fuzz test
    run = cli("kl", tmp_path / "cr.csv", "0.2,0.3,0.5")
    assert "Traceback" not in run.err and (run.code == 0 or run.err.startswith("klcli: error: "))
