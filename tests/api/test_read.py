"""klcli.read: the array each format holds, memory-mapped where the format allows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import klcli
from tests.conftest import FORMATS, SAMPLES, write_table
from tests.io.test_llm_formats import write_llama_base, write_safetensors


# token_logprobs.csv has a text column (doc): it is read by column (below), as the CLI reads it.
@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.iterdir() if p.suffix in
                                        (".npy", ".csv", ".tsv", ".parquet", ".feather")
                                        and p.name != "token_logprobs.csv"))
def test_every_sample_file(name):
    path = SAMPLES / name
    array = klcli.read(path)
    if path.suffix == ".npy":
        expected = np.load(path)
        assert isinstance(array, np.memmap) and not array.flags.writeable
        assert array.dtype == expected.dtype
    elif path.suffix in (".csv", ".tsv"):
        expected = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else "\t", skiprows=1, ndmin=2)
    else:
        import pyarrow.feather as feather
        import pyarrow.parquet as pq

        table = pq.read_table(path) if path.suffix == ".parquet" else feather.read_table(path)
        columns = [np.asarray(table.column(i).to_pylist(), dtype=np.float64) for i in range(table.num_columns)]
        expected = columns[0] if columns[0].ndim == 2 else np.column_stack(columns)
    np.testing.assert_array_equal(array, expected)


def test_npz_members_and_selectors():
    with np.load(SAMPLES / "pq.npz") as archive:
        for key in archive.files:
            np.testing.assert_array_equal(klcli.read(f"{SAMPLES / 'pq.npz'}:{key}"), archive[key])


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_formats(tmp_path, fmt):
    values = np.random.default_rng(31).dirichlet(np.ones(4), size=9)
    operand = write_table(tmp_path / "t", values, fmt)
    np.testing.assert_array_equal(klcli.read(operand), values)


def test_npy_keeps_shape_dtype_and_order(tmp_path):
    cube = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    np.save(tmp_path / "c.npy", cube)
    np.save(tmp_path / "f.npy", np.asfortranarray(cube))
    np.save(tmp_path / "e.npy", np.zeros((0, 5), dtype=np.float32))
    for name in ("c.npy", "f.npy"):
        read = klcli.read(tmp_path / name)
        assert read.dtype == np.float16 and read.shape == (2, 3, 4)
        np.testing.assert_array_equal(read, cube)
    assert klcli.read(str(tmp_path / "e.npy")).shape == (0, 5)


def test_safetensors_mapped_and_bf16_widened(tmp_path):
    values = np.random.default_rng(32).normal(size=(3, 5)).astype(np.float32)
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"logits": values}, bf16={"half": bf16_bits})
    mapped = klcli.read(f"{path}:logits")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, values)
    widened = klcli.read(f"{path}:half")
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened, (bf16_bits.astype(np.uint32) << 16).view(np.float32))


def test_llama_base_file(tmp_path):
    rng = np.random.default_rng(33)
    n_ctx, vocab = 8, 6
    logits = rng.normal(size=(2, n_ctx - 1 - n_ctx // 2, vocab))
    tokens = rng.integers(0, vocab, size=(2, n_ctx))
    decoded = write_llama_base(tmp_path / "base.kld", logits, tokens, n_ctx).reshape(-1, vocab)
    array = klcli.read(tmp_path / "base.kld")
    assert array.shape == decoded.shape and array.dtype == np.float64
    np.testing.assert_array_equal(array, decoded)


def test_openai_logprobs(tmp_path):
    document = {"choices": [
        {"logprobs": {"content": [{"token": "a", "logprob": -0.5, "top_logprobs": []},
                                  {"token": "b", "logprob": -1.5, "top_logprobs": []}]}},
        {"logprobs": {"content": [{"token": "c", "logprob": -0.25, "top_logprobs": []}]}},
    ]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    np.testing.assert_array_equal(klcli.read(path), [[-0.5, -1.5], [-0.25, np.nan]])
    assert klcli.perplexity(klcli.read(path), kind="logprobs").tokens == 3


def test_inline_numbers_and_columns():
    assert klcli.read("0.1,0.9").tolist() == [0.1, 0.9]
    assert klcli.read("1,2;3,4").shape == (2, 2)
    column = klcli.read(f"{SAMPLES / 'token_logprobs.csv'}:logprob")
    assert column.ndim == 1 and np.all(column <= 0)


def test_errors():
    with pytest.raises(ValueError, match="column 0: .a. is not a number"):  # a text column
        klcli.read(SAMPLES / "token_logprobs.csv")
    with pytest.raises(ValueError, match="no such file"):
        klcli.read("/nonexistent/file.npy")
    with pytest.raises(TypeError, match="operand must be a path"):
        klcli.read(np.zeros(3))
