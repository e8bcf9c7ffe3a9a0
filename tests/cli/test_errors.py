"""Bad inputs through the real CLI: exit 2, one exact ``klcli: error:`` line, no traceback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def _files(folder):
    (folder / "empty.csv").write_text("")
    (folder / "text.csv").write_text("a,b\n0.5,0.5\n0.2,x\n")
    (folder / "ragged.csv").write_text("a,b\n0.5,0.5\n0.2\n")
    (folder / "neg.csv").write_text("a,b\n0.5,0.5\n-0.2,1.2\n")
    (folder / "nan.csv").write_text("a,b\n0.5,0.5\nnan,0.5\n")
    (folder / "sum.csv").write_text("a,b\n0.5,0.5\n0.4,0.5\n")
    (folder / "header.csv").write_text("a,b\n")
    (folder / "data.txt").write_text("0.5,0.5\n")
    (folder / "bad.parquet").write_bytes(b"PAR1" + bytes(range(200)))
    np.save(folder / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(folder / "three.npy", np.full((4, 3), 1 / 3))
    np.save(folder / "two.npy", np.full((4, 2), 0.5))
    np.save(folder / "five.npy", np.full((5, 2), 0.5))
    pq.write_table(pa.table({"name": ["a", "b"], "p": [0.5, 0.5]}), folder / "strings.parquet")
    with open(folder / "trunc.npy", "wb") as handle:
        np.save(handle, np.full((100, 4), 0.25))
    (folder / "trunc.npy").write_bytes((folder / "trunc.npy").read_bytes()[:500])


CASES = [
    (("kl", "missing.csv", "0.5,0.5"),
     "missing.csv: no such file (nor inline numbers such as 0.1,0.9 or 0.1,0.9;0.5,0.5)"),
    (("kl", "empty.csv", "0.5,0.5"), "empty.csv: is empty"),
    (("kl", "data.txt", "1"), "data.txt: unknown file type '.txt'; klcli reads .npy .npz .csv .tsv .parquet "
                              ".feather .arrow .safetensors .json .jsonl (rename the file to its format's extension)"),
    (("kl", "text.csv", "0.5,0.5"), "text.csv: row 1 (line 3), column 1: 'x' is not a number"),
    (("kl", "ragged.csv", "0.5,0.5"),
     "ragged.csv: row 1 (line 3) has 1 cells but the header has 2; every row needs the same columns"),
    (("kl", "three.npy", "two.npy"), "P (three.npy) has 3 outcomes per row but Q (two.npy) has 2; both must "
                                     "describe the same outcomes"),
    (("kl", "five.npy", "two.npy"), "P (five.npy) has 5 rows but Q (two.npy) has 4; they must have the same rows, "
                                    "or one of them a single row to compare against every row"),
    (("kl", "neg.csv", "0.5,0.5"), "P (neg.csv): row 1 has a negative probability -0.2 at column 0; probabilities "
                                   "must be >= 0 (pass --kind logits or --kind logprobs if these are scores)"),
    (("kl", "nan.csv", "0.5,0.5"), "P (nan.csv): row 1 has nan at column 0; probabilities must be finite numbers"),
    (("kl", "sum.csv", "0.5,0.5"), "P (sum.csv): row 1 sums to 0.9, not 1 (tolerance 1.1e-06 for 2 float64 values); "
                                   "pass --normalize for "
                                   "counts or weights, or --kind logits if these are logits"),
    (("kl", "bad.parquet", "1"), "bad.parquet: not a valid Parquet file (Parquet magic bytes not found in footer. "
                                 "Either the file is corrupted or this is not a parquet file.)"),
    (("kl", "obj.npy", "1"), "obj.npy: holds Python objects (a pickle); klcli never loads pickles: save the array "
                             "with a numeric dtype"),
    (("kl", "header.csv", "0.5,0.5"), "header.csv: has a header but no rows of numbers"),
    (("kl", "strings.parquet", "0.5,0.5"), "strings.parquet: column 'name' holds string, not numbers; pick the "
                                           "numeric columns with strings.parquet:COL1,COL2,…"),
    (("kl", "trunc.npy", "1,1,1,1", "--normalize"), "trunc.npy: is truncated: its header claims shape (100, 4) of "
                                                    "float64 (3200 bytes) but the file holds 372 bytes of data"),
    (("kl", "0.5,0.5", "0.5,0.5", "--check", "nonsense<1"), None),
    (("kl", "0.5,0.5", "0.5,0.5", "--check", "value<<1"),
     "--check 'value<<1': write KEY OP NUMBER, e.g. 'value<0.1' or 'kl.p99<=0.2' (OP is one of <= >= == != < >)"),
    (("kl", "0.5,0.5", "0.5,0.5", "--base", "1"), "--base '1': use e, 2, 10 or a positive number other than 1"),
    (("kl", "0.5,0.5", "0.5,0.5", "--bogus"), "No such option: --bogus (Possible options: --bits, --jobs, --logits) "
                                              "(see klcli --help)"),
    (("kl", "0.5,0.5"), "Missing argument 'Q' (see klcli --help)"),
    (("js", "0.5,0.5", "0.5,0.5", "--weights", "1,1"),
     "--weights '1,1': the weights must be >= 0 and sum to 1 (e.g. 0.9,0.1)"),
    (("kl", "0.5,0.5", "0.5,0.5", "-T", "0"), "--temperature 0: the temperature must be > 0"),
    (("kl", "0.5,0.5", "0.5,0.5", "--json", "--format", "csv"),
     "--json and --format csv disagree; give one of them"),
    (("kl", "1,2;3", "1"), "'1,2;3': inline rows have different lengths [1, 2]; every row needs the same number of "
                           "values"),
    (("kl", "-", "-"), "only one operand can read standard input ('-')"),
    (("kl", "0.5,0.5", "0.5,0.5", "--logits", "--kind", "probs"), "--logits and --kind probs disagree; give one of "
                                                                   "them"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_error_line(cli, tmp_path, monkeypatch, args, message):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    run = cli(*args)
    assert run.code == 2
    assert run.out == ""
    assert "Traceback" not in run.err
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("klcli: error: ")
    if message is not None:
        assert lines[0] == "klcli: error: " + message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # inputs untouched
