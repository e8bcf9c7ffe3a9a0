"""``klcli reference`` and every command on a reference file, against the same commands on the full logits.

Exact figures (top-1 agreement, top-k overlap for k <= K, the labels' NLL, perplexity, Δp) must equal the full
ones; divergences are lower bounds, equal at K = V. Each damaged reference is a one-line exit 2.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import special

from tests.conftest import ROOT
from tests.io.test_llm_formats import _llama_kld, llama_file, write_llama_base  # noqa: F401 (a fixture)

V, N = 40, 30
TIGHT = {"rel": 1e-9, "abs": 1e-14}


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(11)
    base = rng.normal(0, 2.5, size=(3, N // 3, V)).astype(np.float32)
    test = (base + rng.normal(0, 0.6, size=base.shape)).astype(np.float32)
    log_p = special.log_softmax(base.reshape(-1, V).astype(np.float64), axis=1)
    order = np.argsort(-log_p, axis=1, kind="stable")
    labels = rng.integers(0, V, size=N)
    labels[:5] = order[:5, 0]  # some labels inside any top K, the rest mostly outside small ones
    padded, garbage = labels.copy(), base.copy()
    padded[7] = -100  # an ignored position: padding, whose logits may hold anything
    garbage.reshape(-1, V)[7] = np.nan
    for name, array in (("base", base), ("test", test), ("labels", labels.reshape(3, -1)),
                        ("padded", padded.reshape(3, -1)), ("garbage", garbage)):
        np.save(tmp_path / f"{name}.npy", array)
    return tmp_path


def _write(cli, folder, k, *extra):
    out = folder / f"ref{k}{''.join(extra).replace('-', '')}.safetensors"
    run = cli("reference", folder / "base.npy", "--labels", folder / "labels.npy", "--top-k", k, "-o", out,
              "--json", *extra)
    assert run.code == 0, run.err
    return out, run.json()


def _doc(cli, *args):
    run = cli(*args, "--json", "--per-row")
    assert run.code == 0, run.err
    return run.json()


@pytest.mark.parametrize("k", [1, 5, V])
def test_round_trip_compare_and_perplexity(cli, model, k):
    ref, written = _write(cli, model, k, "--dtype", "float64")
    assert written["rows"] == N and written["top_k"] == k and written["vocab"] == V
    full = _doc(cli, "compare", model / "base.npy", model / "test.npy", "--labels", model / "labels.npy",
                "--top-k", min(k, 5))
    on_ref = _doc(cli, "compare", ref, model / "test.npy", "--top-k", min(k, 5))  # the stored labels
    assert on_ref["reference"] == {"top_k": k, "vocab": V, "bound": "exact" if k == V else "lower"}
    for exact in ("top1_agreement", "topk_overlap", "ppl_base", "ppl_test", "ppl_ratio", "tokens"):
        assert on_ref[exact] == pytest.approx(full[exact], **TIGHT), exact
    assert on_ref["delta_p"]["mean"] == pytest.approx(full["delta_p"]["mean"], **TIGHT)
    for name in ("kl", "kl_reverse", "js", "tv"):
        bounded = np.array(on_ref["per_row"][name], dtype=float)
        whole = np.array(full["per_row"][name], dtype=float)
        kept = ~np.isnan(whole)
        if k == V:
            np.testing.assert_allclose(bounded[kept], whole[kept], rtol=1e-9, atol=1e-14)
        else:
            assert np.all(bounded[kept] <= whole[kept] * (1 + 1e-9) + 1e-14), name
    assert ("figures are lower bounds (top-K reference, K=" in " ".join(on_ref["notes"])) == (k < V)
    ppl_full = _doc(cli, "perplexity", model / "base.npy", "--labels", model / "labels.npy")
    ppl_ref = _doc(cli, "perplexity", ref)
    assert ppl_ref["value"] == pytest.approx(ppl_full["value"], **TIGHT)
    assert ppl_ref["reference"]["bound"] == "exact"
    np.testing.assert_allclose(ppl_ref["per_row"]["perplexity"], ppl_full["per_row"]["perplexity"], rtol=1e-9)


def test_cli_figures_match_the_float64_oracle(cli, model):
    """compare and kl on a reference against the partition written out in NumPy, and PPL against scipy."""
    from tests.core.test_reference import _partition_oracle

    ref, _ = _write(cli, model, 6, "--dtype", "float64")
    base, test = (np.load(model / f"{name}.npy").reshape(-1, V) for name in ("base", "test"))
    oracle = _partition_oracle(base, test, 6)
    doc = _doc(cli, "compare", ref, model / "test.npy")
    for name in ("kl", "kl_reverse", "js", "tv"):
        np.testing.assert_allclose(doc["per_row"][name], oracle[name], rtol=1e-9, atol=1e-14)
    kl = _doc(cli, "kl", ref, model / "test.npy", "--q-kind", "logits")
    np.testing.assert_allclose(kl["per_row"]["kl"], oracle["kl"], rtol=1e-9, atol=1e-14)
    labels = np.load(model / "labels.npy").reshape(-1)
    log_p = special.log_softmax(base.astype(np.float64), axis=1)[np.arange(N), labels]
    assert _doc(cli, "perplexity", ref)["value"] == pytest.approx(math.exp(-log_p.mean()), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("command", ["kl", "js", "xent"])
def test_round_trip_divergences(cli, model, command, dtype):
    for k in (3, V):
        ref, _ = _write(cli, model, k, "--dtype", dtype)
        full = _doc(cli, command, model / "base.npy", model / "test.npy", "--logits")
        on_ref = _doc(cli, command, ref, model / "test.npy", "--q-kind", "logits")
        name = {"kl": "kl", "js": "js_divergence", "xent": "cross_entropy"}[command]
        bounded, whole = np.array(on_ref["per_row"][name]), np.array(full["per_row"][name])
        # float32 storage rounds each stored log-probability by 2^-24 of itself: the figures move by about that.
        rel = 1e-9 if dtype == "float64" else 1e-5
        if k == V:
            np.testing.assert_allclose(bounded, whole, rtol=rel, atol=1e-12)
            assert on_ref["reference"]["bound"] == "exact"
        else:
            assert np.all(bounded <= whole * (1 + rel) + 1e-12)
            assert on_ref["reference"] == {"top_k": k, "vocab": V, "bound": "lower"}


def test_padding_positions_are_never_read_and_left_out(cli, model):
    ref = model / "padded.safetensors"
    written = cli("reference", model / "garbage.npy", "--labels", model / "padded.npy", "--top-k", 5, "-o", ref,
                  "--json").json()
    assert written["summary"]["count"] == N - 1
    full = _doc(cli, "compare", model / "garbage.npy", model / "test.npy", "--labels", model / "padded.npy")
    on_ref = _doc(cli, "compare", ref, model / "test.npy")
    assert on_ref["ignored_positions"] == full["ignored_positions"] == 1
    assert on_ref["per_row"]["kl"][7] is None and on_ref["tokens"] == N - 1
    for exact in ("top1_agreement", "ppl_base", "ppl_test"):
        assert on_ref[exact] == pytest.approx(full[exact], **TIGHT), exact
    assert _doc(cli, "perplexity", ref)["value"] == pytest.approx(
        _doc(cli, "perplexity", model / "garbage.npy", "--labels", model / "padded.npy")["value"], **TIGHT)
    run = cli("kl", ref, model / "test.npy", "--logits")
    assert run.code == 2 and run.err == (
        f"klcli: error: P ({ref}): row 7 is a padding position (its label was ignored when the reference was "
        "written, and its distribution not read); compare and perplexity, which read the stored labels, leave it "
        "out\n")


def test_reverse_kl_and_given_labels(cli, model):
    ref, _ = _write(cli, model, 5)
    doc = _doc(cli, "kl", ref, model / "test.npy", "--logits", "--direction", "both")
    full = _doc(cli, "kl", model / "base.npy", model / "test.npy", "--logits", "--direction", "both")
    assert doc["kl_reverse"]["mean"] <= full["kl_reverse"]["mean"]
    # --labels given: a label inside the top K is known; one outside it (and not the stored one) is not.
    log_p = special.log_softmax(np.load(model / "base.npy").reshape(-1, V).astype(np.float64), axis=1)
    second = np.argsort(-log_p, axis=1, kind="stable")[:, 1]
    np.save(model / "second.npy", second)
    doc = _doc(cli, "compare", ref, model / "test.npy", "--labels", model / "second.npy")
    assert doc["ppl_base"] == pytest.approx(math.exp(-log_p[np.arange(N), second].mean()), rel=1e-6)
    last = np.argsort(-log_p, axis=1, kind="stable")[:, -1]
    np.save(model / "last.npy", last)
    run = cli("compare", ref, model / "test.npy", "--labels", model / "last.npy")
    assert run.code == 2
    assert re.fullmatch(r"klcli: error: BASE \(.*\): row 0's label \d+ is neither the label stored with the "
                        r"reference nor among its top-K tokens, so its log-probability is unknown; write the "
                        r"reference with these --labels \(klcli reference … --labels IDS\)\n", run.err), run.err


def test_ties_keep_the_lowest_ids(cli, tmp_path):
    logits = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    np.save(tmp_path / "tied.npy", logits)
    assert cli("reference", tmp_path / "tied.npy", "--top-k", 2, "-o", tmp_path / "t.safetensors").code == 0
    from klcli.io.safetensors import open_safetensors

    ids = np.asarray(open_safetensors(str(tmp_path / "t.safetensors"), "t", "top_ids").array())
    assert ids.tolist() == [[1, 2], [0, 1]]


def test_an_existing_file_is_replaced_atomically_keeping_its_mode(cli, model):
    out = model / "old.safetensors"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert cli("reference", model / "base.npy", "--top-k", 2, "-o", out).code == 0
    assert out.stat().st_mode & 0o777 == 0o640 and out.read_bytes()[8:9] == b"{"
    assert not list(model.glob(".klcli-*"))


def test_file_size_and_metadata(cli, tmp_path):
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, size=(64, 32000)).astype(np.float32)
    np.save(tmp_path / "big.npy", logits)
    out = tmp_path / "big.ref.safetensors"
    doc = cli("reference", tmp_path / "big.npy", "--top-k", 64, "-o", out, "--json").json()
    npy_bytes = (tmp_path / "big.npy").stat().st_size
    assert out.stat().st_size == doc["bytes"] and npy_bytes / doc["bytes"] >= 100
    data = out.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    meta = header["__metadata__"]
    assert {key: meta[key] for key in ("format", "version", "vocab", "top_k", "has_labels", "rows")} == {
        "format": "klcli-reference", "version": "1", "vocab": "32000", "top_k": "64", "has_labels": "false",
        "rows": "64"}
    assert (8 + length) % 8 == 0 and str(tmp_path / "big.npy") in meta["source"]
    assert [name for name in header if name != "__metadata__"] == ["top_ids", "top_logprobs", "tail_logprob"]


def test_the_readme_numpy_script_reads_a_reference(cli, model):
    ref, _ = _write(cli, model, 5)
    text = (ROOT / "README.md").read_text()
    section = text.split("## Reference files", 1)[1].split("\n## ", 1)[0]
    script = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert len(script.strip().splitlines()) <= 10
    assert '"sample_data/teacher.ref.safetensors"' in script
    scope: dict = {}
    exec(script.replace('"sample_data/teacher.ref.safetensors"', repr(str(ref))), scope)  # noqa: S102 — as documented
    log_p = special.log_softmax(np.load(model / "base.npy").reshape(-1, V).astype(np.float64), axis=1)
    top = np.argsort(-log_p, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(scope["ids"], top)
    np.testing.assert_allclose(scope["logprobs"], np.take_along_axis(log_p, top, axis=1), rtol=1e-6)
    rest = np.log(1 - np.exp(np.take_along_axis(log_p, top, axis=1)).sum(axis=1))
    np.testing.assert_allclose(scope["tail"], rest, rtol=1e-9)
    assert scope["meta"]["format"] == "klcli-reference"


# --- llama.cpp base files -----------------------------------------------------------------------------------


def test_reference_of_a_llama_base_file_reproduces_its_figures(cli, llama_file, tmp_path):  # noqa: F811
    path, logits, tokens, n_ctx = llama_file
    flat = logits.reshape(-1, logits.shape[-1])
    test = (flat + np.random.default_rng(1).normal(0, 0.3, size=flat.shape)).astype(np.float32)
    np.save(tmp_path / "test.npy", test)
    from klcli.io.operand import open_operand

    decoded = np.concatenate(list(open_operand(str(path)).blocks(100)))
    first = n_ctx // 2 + 1
    labels = tokens[:, first : first + logits.shape[1]].reshape(-1)
    nll_base = -decoded[np.arange(len(labels)), labels]
    for k, dtype in ((4, "float32"), (flat.shape[1], "float64")):
        ref = tmp_path / f"llama{k}.safetensors"
        assert cli("reference", path, "--top-k", k, "-o", ref, "--dtype", dtype).code == 0
        ppl = cli("perplexity", ref, "--json").json()
        assert ppl["value"] == pytest.approx(math.exp(nll_base.mean()), rel=1e-12)  # PPL(base), exactly
        doc = cli("compare", ref, tmp_path / "test.npy", "--json", "--per-row").json()
        assert doc["ppl_base"] == pytest.approx(math.exp(nll_base.mean()), rel=1e-12)
        assert doc["top1_agreement"] == pytest.approx(np.mean(np.argmax(decoded, 1) == np.argmax(test, 1)))
        expected = _llama_kld(decoded, test)  # llama.cpp's own sum
        if k == flat.shape[1]:
            np.testing.assert_allclose(doc["per_row"]["kl"], expected, rtol=1e-9, atol=1e-14)
        else:  # merged outcomes: below llama.cpp's figure by at most what the 16-bit rows leave uncertain
            assert np.all(np.array(doc["per_row"]["kl"]) <= expected + 1e-3)


# --- damaged references and bad pairs -----------------------------------------------------------------------


def _rewrite(path, out, *, metadata=None, tensor=None, values=None):
    """A copy of a reference with its metadata changed, or one tensor's values replaced."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    body = bytearray(data[8 + length :])
    if metadata is not None:
        header["__metadata__"] = metadata(header["__metadata__"])
    if tensor is not None:
        begin, end = header[tensor]["data_offsets"]
        dtype = {"I32": "<i4", "I64": "<i8", "F32": "<f4", "F64": "<f8"}[header[tensor]["dtype"]]
        array = np.frombuffer(bytes(body[begin:end]), dtype=dtype).copy().reshape(header[tensor]["shape"])
        values(array)
        body[begin:end] = array.tobytes()
    text = json.dumps(header).encode()
    out.write_bytes(len(text).to_bytes(8, "little") + text + bytes(body))
    return out


def _set(array, index, value):
    array[index] = value


DAMAGED = [
    ("no metadata", {"metadata": lambda m: {}}, "holds a top-K reference's tensors but not its metadata"),
    ("another version", {"metadata": lambda m: {**m, "version": "2"}},
     "is a klcli reference file of version '2'; this klcli reads version 1"),
    ("K above V", {"metadata": lambda m: {**m, "top_k": "5", "vocab": "4"}},
     "a reference file with top_k=5 over vocab=4; K must be between 1 and the vocabulary size"),
    ("id out of range", {"tensor": "top_ids", "values": lambda a: _set(a, (3, 1), 40)},
     "row 3 stores token id 40, outside the vocabulary [0, 40)"),
    ("repeated id", {"tensor": "top_ids", "values": lambda a: _set(a, (2, 1), a[2, 0])},
     "row 2 stores a token id twice"),
    ("mass above 1", {"tensor": "top_logprobs", "values": lambda a: _set(a, (4, 0), a[4, 0] + 0.01)},
     "row 4's probabilities (top 5 and tail) sum to"),
    ("tail too large", {"tensor": "tail_logprob", "values": lambda a: _set(a, 6, 0.0)},
     "row 6's probabilities (top 5 and tail) sum to"),
]


@pytest.mark.parametrize(("case", "change", "message"), DAMAGED, ids=[case[0] for case in DAMAGED])
def test_damaged_references_are_refused(cli, model, case, change, message):
    ref, _ = _write(cli, model, 5)
    damaged = _rewrite(ref, model / "damaged.safetensors", **change)
    for args in (("kl", damaged, model / "test.npy", "--logits"), ("compare", damaged, model / "test.npy"),
                 ("perplexity", damaged)):
        run = cli(*args)
        assert run.code == 2, (args, run.err)
        assert run.err.startswith(f"klcli: error: {damaged}: ") and message in run.err, run.err
        assert run.err.count("\n") == 1


def test_bad_pairs_and_options(cli, model, tmp_path):
    ref, _ = _write(cli, model, 5)
    np.save(tmp_path / "wide.npy", np.zeros((N, V + 1), dtype=np.float32))
    run = cli("compare", ref, tmp_path / "wide.npy")
    assert run.code == 2 and "has shape (3, 10, 40) but TEST" in run.err
    run = cli("kl", ref, tmp_path / "wide.npy", "--logits")
    assert run.code == 2 and f"is a top-K reference over a vocabulary of {V} but Q ({tmp_path / 'wide.npy'}) has " \
        f"{V + 1} outcomes per row" in run.err
    run = cli("kl", model / "test.npy", ref, "--logits")
    assert run.code == 2 and "is read as the first operand (P or BASE) only" in run.err
    run = cli("kl", ref, model / "test.npy", "--logits", "--temperature", "2")
    assert run.code == 2 and "was written at temperature 1, and its distributions cannot be tempered again" in run.err
    run = cli("reference", model / "base.npy", "--top-k", V + 1, "-o", tmp_path / "x.safetensors")
    assert run.code == 2 and f"--top-k {V + 1}: is larger than the vocabulary" in run.err
    run = cli("reference", model / "base.npy", "--top-k", 3, "-o", model / "base.npy")
    assert run.code == 2 and "is one of the inputs" in run.err
    assert cli("reference", model / "base.npy", "-o", tmp_path / "y.safetensors").code == 2  # no --top-k
    run = cli("reference", model / "base.npy", "--top-k", 3, "-o", "/dev/null")
    assert run.code == 2 and "a reference is written as a regular file" in run.err
    assert cli("reference", model / "base.npy", "--top-k", 3, "-o", "-").code == 2
    assert not (tmp_path / "x.safetensors").exists() and not list(tmp_path.glob(".klcli-*"))
    # Where a reference cannot be read: as labels, per-token values, a parameter array, or against another one.
    run = cli("compare", model / "base.npy", model / "test.npy", "--labels", ref)
    assert run.code == 2 and run.err.endswith("is a top-K reference file; it is read as P or BASE only, not as "
                                              "--labels\n")
    run = cli("perplexity", ref, "--kind", "logprobs")
    assert run.code == 2 and "not as --kind logprobs values" in run.err
    run = cli("gaussian", "--mu1", ref)
    assert run.code == 2 and "is a klcli top-K reference file, which only kl, js, xent, compare" in run.err
    run = cli("rlhf", "--policy-logits", ref, "--ref-logits", ref, "--labels", model / "labels.npy")
    assert run.code == 2 and "two top-K references cannot be compared with each other" in run.err


def test_an_unknown_label_is_named_by_its_input_row_whatever_is_left_out(cli, tmp_path):
    """A label that is neither stored nor among the top K: the error names its row in the input, with --mask
    leaving positions out and through --jobs (it was counted over the scored rows only)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 8, 30))
    np.save(tmp_path / "base.npy", logits)
    np.save(tmp_path / "test.npy", logits + rng.normal(scale=0.1, size=logits.shape))
    flat = logits.reshape(-1, 30)
    labels = np.argmax(flat, axis=1)
    labels[11] = int(np.argmin(flat[11]))  # the least probable token: outside the top 3
    np.save(tmp_path / "labels.npy", labels.reshape(2, 8))
    mask = np.ones(16, dtype=np.int64)
    mask[:5] = 0
    np.save(tmp_path / "mask.npy", mask.reshape(2, 8))
    assert cli("reference", tmp_path / "base.npy", "--kind", "logits", "--top-k", "3", "-o",
               tmp_path / "ref.safetensors").code == 0
    for extra in ([], ["--jobs", "2"]):
        run = cli("compare", tmp_path / "ref.safetensors", tmp_path / "test.npy", "--test-kind", "logits",
                  "--labels", tmp_path / "labels.npy", "--mask", tmp_path / "mask.npy", "-q", *extra)
        assert run.code == 2 and f"row 11's label {labels[11]} is neither" in run.err, run.err


@pytest.mark.parametrize("k", [5, V])
def test_a_gate_on_lower_bounds_says_so_on_standard_error(cli, model, k):
    """`-q --check` prints only the figure: that it is a lower bound (K < V) must reach standard error too,
    or a CI gate passes on it in silence; at K = V the figures are exact and nothing is said."""
    ref, _ = _write(cli, model, k)
    run = cli("kl", ref, model / "test.npy", "--logits", "-q", "--check", "value<1e9")
    assert run.code == 0
    assert ("klcli: note: figures are lower bounds" in run.err) == (k < V)
