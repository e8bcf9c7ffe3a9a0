"""The bad-input corpus: every format and command, each a clear error with nothing lost or allocated.

Each case writes its files, runs klcli in-process under tracemalloc, and asserts
exit 2, one ``klcli: error:`` line naming the problem, no traceback, inputs
byte-identical afterwards, and no large allocation (a size claimed by a header
is checked against the file before anything is allocated).
"""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest


def npy_header(shape, dtype="<f8"):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def npy_header_text(shape_text: str) -> bytes:
    """An .npy header whose shape is written as given (sizes no array can have)."""
    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_text + ", }").encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def reference_bytes(metadata: bool = True, **fields) -> bytes:
    """A tiny top-K reference (2 rows, K = 2 of V = 4, no labels) with metadata fields replaced."""
    ids = np.array([[0, 1], [2, 3]], dtype="<i4").tobytes()
    top = np.log(np.array([[0.5, 0.25], [0.5, 0.25]])).astype("<f4").tobytes()
    tail = np.log(np.array([0.25, 0.25])).astype("<f8").tobytes()
    header: dict = {"top_ids": {"dtype": "I32", "shape": [2, 2], "data_offsets": [0, 16]},
                    "top_logprobs": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]},
                    "tail_logprob": {"dtype": "F64", "shape": [2], "data_offsets": [32, 48]}}
    if metadata:
        header["__metadata__"] = {"format": "klcli-reference", "version": "1", "vocab": "4", "top_k": "2",
                                  "rows": "2", "shape": "2", "has_labels": "false", "temperature": "1.0", **fields}
    return safetensors_bytes(header, ids + top + tail)


def safetensors_text(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


DEEP = b"[" * 100_000 + b"]" * 100_000
DIGITS = b"9" * 5000


def _write(folder, files: dict):
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            content(path)


def _save(array, **kwargs):
    return lambda path: np.save(path, array, **kwargs)


def _parquet(table):
    return lambda path: pq.write_table(table, path)


P = "0.5,0.5"
CASES = {
    # .npy
    "npy truncated": ({"a.npy": npy_header((100, 4)) + b"\0" * 100}, ("kl", "a.npy", "1,1,1,1"), "is truncated"),
    "npy claims 10^12 elements": ({"a.npy": npy_header((1_000_000, 1_000_000)) + b"\0" * 64},
                                  ("kl", "a.npy", P), "claims shape (1000000, 1000000)"),
    "npy pickle": ({"a.npy": _save(np.array([{"x": 1}], dtype=object), allow_pickle=True)}, ("kl", "a.npy", P),
                   "holds Python objects (a pickle); klcli never loads pickles"),
    "npy structured dtype": ({"a.npy": _save(np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))}, ("kl", "a.npy", P),
                             "not numbers"),
    "npy complex": ({"a.npy": _save(np.zeros(2, dtype=complex))}, ("kl", "a.npy", P), "not numbers"),
    "npy scalar": ({"a.npy": _save(np.float64(1.0))}, ("kl", "a.npy", P), "holds a single number"),
    "npy bad magic": ({"a.npy": b"NUMPY?" + bytes(200)}, ("kl", "a.npy", P), "not a valid .npy file"),
    "npy trailing bytes": ({"a.npy": npy_header((2,)) + b"\0" * 24}, ("kl", "a.npy", P), "has trailing bytes"),
    # .npz
    "npz pickle": ({"a.npz": lambda p: np.savez(p, x=np.array([{"x": 1}], dtype=object))}, ("kl", "a.npz", P),
                   "holds Python objects (a pickle)"),
    "npz random bytes": ({"a.npz": bytes(range(256)) * 4}, ("kl", "a.npz", P), "not a valid .npz archive"),
    "npz missing key": ({"a.npz": lambda p: np.savez(p, x=np.full(2, 0.5))}, ("kl", "a.npz:y", P),
                        "has no array 'y'; it holds: x"),
    "npz two arrays": ({"a.npz": lambda p: np.savez(p, x=np.full(2, 0.5), y=np.full(2, 0.5))}, ("kl", "a.npz", P),
                       "holds 2 arrays (x, y); name one"),
    "npz truncated member": ({"a.npz": lambda p: (np.savez(p, x=np.full(1000, 0.001)),
                                                  p.write_bytes(p.read_bytes()[:600]))},
                             ("kl", "a.npz", "0.001"), "a.npz"),
    # Parquet
    "parquet random bytes": ({"a.parquet": bytes(range(256))}, ("kl", "a.parquet", P), "not a valid Parquet file"),
    "parquet string column": ({"a.parquet": _parquet(pa.table({"s": ["a", "b"], "p": [0.5, 0.5]}))},
                              ("kl", "a.parquet", P), "column 's' holds string, not numbers"),
    "parquet ragged lists": ({"a.parquet": _parquet(pa.table({"v": [[0.5, 0.5], [0.2, 0.3, 0.5]]}))},
                             ("kl", "a.parquet", P), "row 1 of column 'v' has 3 values but earlier rows have 2"),
    "parquet null": ({"a.parquet": _parquet(pa.table({"a": [0.5, None], "b": [0.5, 0.5]}))},
                     ("kl", "a.parquet", P), "row 1 of column 'a' is empty (null)"),
    "parquet missing column": ({"a.parquet": _parquet(pa.table({"a": [0.5], "b": [0.5]}))},
                               ("kl", "a.parquet:c", "1"), "has no column 'c'; its columns are: a, b"),
    "parquet list of strings": ({"a.parquet": _parquet(pa.table({"v": [["a", "b"]]}))}, ("kl", "a.parquet", P),
                                "holds string, not numbers"),
    # Arrow / Feather
    "feather random bytes": ({"a.feather": bytes(range(200))}, ("kl", "a.feather", P),
                             "not a valid Arrow IPC / Feather v2 file"),
    "arrow string column": ({"a.arrow": lambda p: feather.write_feather(pa.table({"s": ["x"]}), p)},
                            ("kl", "a.arrow", "1"), "column 's' holds string, not numbers"),
    # safetensors
    "safetensors random bytes": ({"a.safetensors": bytes(range(255, 0, -1))}, ("kl", "a.safetensors", P),
                                 "not a valid safetensors file"),
    "safetensors offsets past the end": (
        {"a.safetensors": safetensors_bytes({"x": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16_000]}},
                                            bytes(16))},
        ("kl", "a.safetensors", P), "claims bytes [0, 16000) but the data holds 16"),
    "safetensors header not JSON": ({"a.safetensors": struct.pack("<Q", 4) + b"{{{{"}, ("kl", "a.safetensors", P),
                                    "its header is not JSON"),
    "safetensors missing tensor": (
        {"a.safetensors": safetensors_bytes({"x": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}},
                                            np.full(2, 0.5).tobytes())},
        ("kl", "a.safetensors:y", P), "has no tensor 'y'; it holds: x"),
    # llama.cpp base files
    "llama magic, short body": ({"base.kld": b"_logits_" + bytes(6)}, ("perplexity", "base.kld"),
                                "is not a llama.cpp KL-divergence base file"),
    "llama wrong size": ({"base.kld": b"_logits_" + struct.pack("<iii", 8, 4, 1) + bytes(40)},
                         ("perplexity", "base.kld"), "has 100 bytes, but this one has 60"),
    "llama absurd sizes": ({"base.kld": b"_logits_" + struct.pack("<iii", -3, 4, 1)}, ("perplexity", "base.kld"),
                           "each must be positive"),
    # CSV / TSV
    "csv text cell": ({"a.csv": "a,b\n0.5,0.5\n0.2,x\n"}, ("kl", "a.csv", P), "row 1 (line 3), column 1: 'x'"),
    "csv ragged": ({"a.csv": "a,b\n0.5,0.5\n0.2\n"}, ("kl", "a.csv", P), "has 1 cells but the header has 2"),
    "csv only a header": ({"a.csv": "a,b\n"}, ("kl", "a.csv", P), "has a header but no rows of numbers"),
    "csv empty": ({"a.csv": ""}, ("kl", "a.csv", P), "is empty"),
    "csv not utf-8": ({"a.csv": b"\xff\xfe\x00a,\x00b\n"}, ("kl", "a.csv", P), "is not UTF-8 text"),
    "csv duplicate header": ({"a.csv": "a,a\n0.5,0.5\n"}, ("kl", "a.csv", P), "names a column twice"),
    "tsv text cell": ({"a.tsv": "a\tb\n0.5\tnope\n"}, ("kl", "a.tsv", P), "'nope' is not a number"),
    # OpenAI-style logprobs
    "json missing keys": ({"a.json": json.dumps({"choices": [{"logprobs": {"content": [{"token": "x"}]}}]}),
                           "b.json": json.dumps([{"token": "x", "logprob": 0.0, "top_logprobs": []}])},
                          ("kl", "a.json", "b.json"), "needs the keys 'token' and 'logprob'"),
    "json garbage": ({"a.json": "{not json", "b.json": "[]"}, ("kl", "a.json", "b.json"), "line 1 is not JSON"),
    "json no positions": ({"a.json": "[]"}, ("perplexity", "a.json"), "holds no token positions"),
    "json logprob not a number": ({"a.json": json.dumps([{"token": "x", "logprob": "high"}])},
                                  ("perplexity", "a.json"), "a log-probability must be a number"),
    # labels, distributions, covariances, options
    "labels out of range": ({"z.npy": _save(np.zeros((4, 3))), "y.npy": _save(np.array([0, 1, 2, 3]))},
                            ("perplexity", "z.npy", "--labels", "y.npy"), "the label at position 3 is 3, outside"),
    "labels not integers": ({"z.npy": _save(np.zeros((2, 3))), "y.npy": _save(np.array([0.0, 1.5]))},
                            ("perplexity", "z.npy", "--labels", "y.npy"), "labels must be integer token ids"),
    "covariance not positive definite": ({"c.npy": _save(np.array([[1.0, 2.0], [2.0, 1.0]]))},
                                         ("gaussian", "--cov1", "c.npy"), "matrix 0 is not positive definite"),
    "negative sigma": ({}, ("gaussian", "--sigma2", "-1"), "a standard deviation must be > 0"),
    "conflicting spreads": ({}, ("gaussian", "--sigma1", "1", "--logvar1", "0"), "give one of them"),
    "conflicting formats": ({}, ("kl", P, P, "--json", "--format", "ndjson"), "disagree"),
    "group with logits": ({}, ("perplexity", "1,2", "--group", "doc"), "--group goes with --kind logprobs"),
    "directory operand": ({"d": lambda p: p.mkdir()}, ("kl", "d", P), "is a directory"),
    "output over an input": ({"a.csv": "a,b\n0.5,0.5\n"}, ("kl", "a.csv", P, "-o", "a.csv"),
                             "is one of the inputs"),
    "row not summing to 1": ({"a.npy": _save(np.array([[0.5, 0.4]]))}, ("kl", "a.npy", P), "sums to 0.9"),
    "nan logits": ({"a.npy": _save(np.array([[0.0, np.nan]]))}, ("kl", "a.npy", "0,0", "--logits"),
                   "has nan at column 1; logits must be finite"),
    "compare vocabularies differ": ({"a.npy": _save(np.zeros((2, 3))), "b.npy": _save(np.zeros((2, 4)))},
                                    ("compare", "a.npy", "b.npy"), "has shape (2, 3) but TEST"),
    # malformed headers (issue 21): each an error naming the file, never the interpreter's own limits
    "npy negative shape": ({"a.npy": npy_header_text("(-2, -4)") + bytes(64)}, ("kl", "a.npy", P),
                           "a.npy: not a valid .npy file: its header claims shape (-2, -4)"),
    "npy 65 dimensions": ({"a.npy": npy_header_text("(" + "1," * 65 + ")") + bytes(8)}, ("kl", "a.npy", P),
                          "a.npy: not a valid .npy file: its header claims 65 dimensions"),
    "npy shape 1e400": ({"a.npy": npy_header_text("(1e400,)")}, ("kl", "a.npy", P), "a.npy: not a valid .npy file"),
    "npy 5000-digit shape": ({"a.npy": npy_header_text("(" + "9" * 5000 + ",)")}, ("kl", "a.npy", P),
                             "a.npy: not a valid .npy file"),
    "safetensors 100000-deep header": ({"a.safetensors": safetensors_text(DEEP)}, ("kl", "a.safetensors", P),
                                       "a.safetensors: its JSON is nested too deeply"),
    "safetensors shape 1e400": (
        {"a.safetensors": safetensors_text(b'{"t": {"dtype": "F64", "shape": [1e400], "data_offsets": [0, 8]}}',
                                           bytes(8))},
        ("kl", "a.safetensors", P), "tensor 't' has a malformed header entry"),
    "safetensors offset 1e400": (
        {"a.safetensors": safetensors_text(b'{"t": {"dtype": "F64", "shape": [1], "data_offsets": [0, 1e400]}}',
                                           bytes(8))},
        ("kl", "a.safetensors", P), "tensor 't' has a malformed header entry"),
    "safetensors 5000-digit shape": (
        {"a.safetensors": safetensors_text(b'{"t": {"dtype": "F64", "shape": [' + DIGITS
                                           + b'], "data_offsets": [0, 8]}}', bytes(8))},
        ("kl", "a.safetensors", P), "a.safetensors: holds an integer of 5000 digits"),
    "safetensors negative shape": (
        {"a.safetensors": safetensors_bytes({"t": {"dtype": "F64", "shape": [-1, -8], "data_offsets": [0, 64]}},
                                            bytes(64))},
        ("kl", "a.safetensors", P), "tensor 't' has a malformed header entry"),
    "safetensors 100 dimensions": (
        {"a.safetensors": safetensors_bytes({"t": {"dtype": "F64", "shape": [1] * 100, "data_offsets": [0, 8]}},
                                            bytes(8))},
        ("kl", "a.safetensors", P), "tensor 't' claims 100 dimensions"),
    # klcli top-K reference files (safetensors with format klcli-reference metadata)
    "reference version 2": ({"r.safetensors": reference_bytes(version="2")}, ("perplexity", "r.safetensors"),
                            "is a klcli reference file of version '2'; this klcli reads version 1"),
    "reference claims 10^12 rows": ({"r.safetensors": reference_bytes(rows="1000000000000",
                                                                      shape="1000000000000")},
                                    ("compare", "r.safetensors", P), "tensor 'top_ids' is I32 of shape [2, 2]"),
    "reference vocab 1e400": ({"r.safetensors": reference_bytes(vocab="1e400")}, ("perplexity", "r.safetensors"),
                              "metadata needs 'vocab' (a number); it has '1e400'"),
    "reference K above V": ({"r.safetensors": reference_bytes(top_k="9")}, ("perplexity", "r.safetensors"),
                            "a reference file with top_k=9 over vocab=4"),
    "reference tensors without metadata": ({"r.safetensors": reference_bytes(metadata=False)},
                                           ("kl", "r.safetensors", P), "holds a top-K reference's tensors but not"),
    "json 100000-deep": ({"a.json": DEEP}, ("perplexity", "a.json", "--kind", "logprobs"),
                         "a.json: its JSON is nested too deeply"),
    "jsonl 100000-deep line": ({"a.jsonl": b"[]\n" + DEEP + b"\n"}, ("perplexity", "a.jsonl", "--kind", "logprobs"),
                               "its JSON is nested too deeply"),
    "json 5000-digit logprob": ({"a.json": b'[{"token": "a", "logprob": ' + DIGITS + b"}]"},
                                ("perplexity", "a.json", "--kind", "logprobs"), "a.json: holds an integer of 5000"),
    "json legacy tokens 5": ({"a.json": json.dumps({"choices": [{"logprobs": {"tokens": 5, "token_logprobs": [0]}}]})},
                             ("perplexity", "a.json", "--kind", "logprobs"),
                             "legacy logprobs need lists 'tokens' and 'token_logprobs', got int"),
    "json top_logprobs 5": ({"a.json": json.dumps([{"token": "a", "logprob": 0.0, "top_logprobs": 5}])},
                            ("perplexity", "a.json", "--kind", "logprobs"), "top_logprobs: must be a list"),
}


def test_the_corpus_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(cli, tmp_path, monkeypatch, name):
    files, args, message = CASES[name]
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    tracemalloc.start()
    try:
        run = cli(*args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.code == 2, run.out + run.err
    assert "Traceback" not in run.err and run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("klcli: error: "), run.err
    assert message in lines[0]
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated"
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before
