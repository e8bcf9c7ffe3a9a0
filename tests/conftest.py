"""Shared helpers: run the CLI in-process, and write arrays in every format klcli reads."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI runs the property tests with a fixed seed, so a run is reproducible; locally they explore anew each time.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Call ``klcli ARGS`` in this process; returns exit code, stdout and stderr."""
    from klcli.cli import main

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("KLCLI_DEBUG", raising=False)

    def run(*args: str, stdin: bytes | None = None) -> Run:
        if stdin is not None:
            import io
            import sys

            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(stdin))))
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def write_table(path: Path, values: np.ndarray, fmt: str) -> str:
    """Write rows × outcomes ``values`` as ``fmt``; return the operand that reads them back."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    if fmt == "npy":
        np.save(path.with_suffix(".npy"), values)
        return str(path.with_suffix(".npy"))
    if fmt == "npz":
        np.savez_compressed(path.with_suffix(".npz"), data=values, other=np.zeros(3))
        return f"{path.with_suffix('.npz')}:data"
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        text = sep.join(f"c{i}" for i in range(values.shape[1])) + "\n"
        text += "\n".join(sep.join(repr(float(v)) for v in row) for row in values) + "\n"
        target = path.with_suffix("." + fmt)
        target.write_text(text)
        return str(target)
    if fmt == "parquet":
        target = path.with_suffix(".parquet")
        pq.write_table(pa.table({"v": pa.array(values.tolist(), type=pa.list_(pa.float64()))}), target,
                       row_group_size=7)
        return str(target)
    if fmt == "feather":
        target = path.with_suffix(".feather")
        feather.write_feather(pa.table({f"c{i}": values[:, i] for i in range(values.shape[1])}), target,
                              chunksize=5)
        return str(target)
    raise ValueError(fmt)


FORMATS = ("npy", "npz", "csv", "tsv", "parquet", "feather")


# The slow tier (`python -m pytest -m slow`; the README's test command and CI run every tier): precision on
# 32,000-wide logits, fuzzing, signals and README examples through the shell, whole processes on big inputs.
SLOW = (
    "tests/reliability/test_precision.py",
    "tests/reliability/test_fast_precision.py",
    "tests/reliability/test_fuzz.py",
    "tests/reliability/test_stress.py",
    "tests/reliability/test_corpus.py",
    "tests/reliability/test_hostile.py",
    "tests/reliability/test_streams.py",
    "tests/reliability/test_output_targets.py",
    "tests/core/test_gaussian.py::test_full_form_with_a_scaled_covariance_at_k_500",
    "tests/reliability/test_signals.py::test_sigint_while_running",
    "tests/test_docs.py::test_readme_examples",
    "tests/test_docs.py::test_shell_completion",
    "tests/cli/test_process.py::test_closed_pipe",
    "tests/cli/test_process.py::test_installed_console_script",
    "tests/cli/test_process.py::test_module_entry_point",
)


SLOW_CASES = ("-128256]",)  # a Llama-3-sized vocabulary: the 32,000-wide cases stay in the quick tier


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW) or any(case in item.nodeid for case in SLOW_CASES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def shard_reads(monkeypatch):
    """Per shard (its path as the listing gives it), the rows (values, for 1-D) its data yielded after the operand
    was opened: the up-front check of every shard reads headers only, so all counted here was read for rows asked."""
    from dataclasses import replace

    from klcli.io import operand as opening

    read: dict[str, int] = {}
    original = opening.open_file

    def counted(path, *args, **kwargs):
        source = original(path, *args, **kwargs)
        name = str(path)

        def count(blocks):
            for block in blocks:
                read[name] = read.get(name, 0) + block.shape[0]
                yield block

        def array():  # a memory map: what is sliced out of it is read (rows of a 2-D view, values of a 1-D one)
            def sliced(self, key):
                out = np.ndarray.__getitem__(self, key)
                read[name] = read.get(name, 0) + (out.shape[0] if out.ndim == 2 else out.size)
                return out.view(np.ndarray)

            return source.array().view(type("Counted", (np.ndarray,), {"__getitem__": sliced}))

        return replace(source, read_blocks=lambda n: count(source.read_blocks(n)),
                       read_rows=None if source.read_rows is None else
                       (lambda a, b, n: count(source.read_rows(a, b, n))),
                       array=None if source.array is None else array)

    monkeypatch.setattr(opening, "open_file", counted)
    return read
