"""Whole-process benchmarks of klcli against its peers, as ratios measured in one run.

    python -m tests.bench.run [--rows 4096] [--vocab 32000] [--repeat 5] [--drift 0.1] [--csv-rows 32]
                              [--only kl,compare]

Generates random logits (std 2; Q = P + noise of std ``--drift``, 0.1 by default) as float32 .npy files
in a temporary folder, and, for the figures named ``…@DRIFT``, the drifts of issue 20: Q = P + noise of
std 0.01, 0.1 or 0.5 (``kl@0.01``, ``kl fast@0.1`` …) and the hard case Q = P + 5 + noise of std 1e-4
(``kl@hard``; ``js``, ``js fast``, ``compare`` and ``compare fast`` too, whose last column is the
fast figure over its command's default on the same data); ``kl float16…@DRIFT`` figures read float16
copies (their ratio is to ``floor float16``).
The format figures of issue 20 item 5 read the same P and Q in other files: ``kl float32 npy`` (the ``kl``
command), ``kl bfloat16 safetensors`` (a real safetensors file: a JSON header, then the bfloat16 bits, rounded
to nearest even from the float32 logits as torch rounds), ``kl float16 npy``, ``kl parquet`` (a list column,
row groups of 256 rows) beside ``pyarrow streams parquet`` (pyarrow reading the same files alone, as klcli
reads them) and ``kl csv`` (the first ``--csv-rows`` rows, 32 by default) beside ``pyarrow reads csv``; their
``× peer`` column is each figure over its peer of the same run (``PEERS``).
Then it times each command as a separate process: one
warm-up, then ``--repeat`` rounds in which every command runs once, in turn,
so that peers and klcli see the same machine state; the warm-up also caches
klcli's bytecode, as an installed program has it. Prints the median wall
time of each and its ratio to the memory floor (a process that memory-maps
both files and sums each once). Peers that are not installed (scipy, torch)
are skipped and said so. Nothing here is a test; the suite never times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FLOOR = """
import sys, numpy as np
for path in sys.argv[1:3]:
    float(np.load(path, mmap_mode="r").sum())
"""

SCIPY = """
import sys, numpy as np
from scipy.special import softmax
from scipy.stats import entropy
p, q = (np.load(path) for path in sys.argv[1:3])
print(entropy(softmax(p, axis=1), softmax(q, axis=1), axis=1).mean())
"""

# The float16 files' memory floor: the same bytes summed as float32 words (NumPy's float16 sum is a scalar
# conversion loop, 3× slower than reading twice the bytes as float32, so it would be no floor).
FLOOR16 = """
import sys, numpy as np
for path in sys.argv[1:3]:
    half = np.load(path, mmap_mode="r").reshape(-1)
    float(half[: half.size // 2 * 2].view(np.float32).sum())
"""

READ_PARQUET = """
import sys, pyarrow.parquet as pq
for path in sys.argv[1:3]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        batch.column(0).flatten().to_numpy()
"""

# The same file read as klcli reads it: a buffered stream, no pre-buffering, batches of a block's rows.
READ_PARQUET_STREAMED = """
import sys, pyarrow.parquet as pq
for path in sys.argv[1:3]:
    reader = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    for batch in reader.iter_batches(batch_size=32, use_threads=False):
        batch.column(0).flatten().to_numpy()
"""

READ_CSV = """
import sys, pyarrow.csv as pcsv
for path in sys.argv[1:3]:
    for batch in pcsv.open_csv(path):
        pass
"""

TORCH_CHUNKED = """
import sys, numpy as np, torch
import torch.nn.functional as F
p, q = (np.load(path, mmap_mode="c") for path in sys.argv[1:3])  # copy-on-write: writable for torch, never copied
total = 0.0
for start in range(0, p.shape[0], 32):
    a, b = torch.from_numpy(np.asarray(p[start:start + 32])), torch.from_numpy(np.asarray(q[start:start + 32]))
    total += F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="sum").item()
print(total / p.shape[0])
"""

TORCH = """
import sys, numpy as np, torch
import torch.nn.functional as F
p, q = (torch.from_numpy(np.load(path)) for path in sys.argv[1:3])
kl = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), log_target=True, reduction="none").sum(-1)
print(kl.mean().item())
"""


# compare with K candidates against one BASE: K = 1 is "compare"; the README's speed figure is their ratio.
CANDIDATE_FIGURES = ("compare 2 tests", "compare 3 tests", "compare 3 --labels")


# The format figures (issue 20 item 5) and the peer each is a ratio to, in the "× peer" column.
PEERS = {
    "kl bfloat16 safetensors": "kl float32 npy",
    "kl float16 npy": "kl float32 npy",
    "kl parquet": "pyarrow streams parquet",
    "kl csv": "pyarrow reads csv",
}


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even, as torch rounds), as their uint16 bits.

    >>> bfloat16_bits(np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -np.inf], dtype=np.float32)).tolist()
    [16256, 16256, 16258, 65408]
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = np.isnan(values)
    if nan.any():  # a NaN stays a NaN (quiet), whatever its low bits
        rounded[nan] = (bits[nan] >> np.uint32(16)) | np.uint32(0x40)
    return rounded.astype(np.uint16)


def save_safetensors(path: Path, name: str, array: np.ndarray, dtype: str = "BF16") -> None:
    """One tensor as a safetensors file: the 8-byte header length, the JSON header (padded to 8 bytes with
    spaces), then the raw little-endian data; BF16 is rounded from float32 a block of rows at a time."""
    import json

    itemsize = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    header = json.dumps({name: {"dtype": dtype, "shape": list(array.shape),
                                "data_offsets": [0, array.size * itemsize]}}).encode()
    header += b" " * (-len(header) % 8)
    rows = array.reshape(-1, array.shape[-1])
    with open(path, "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        for start in range(0, rows.shape[0], 256):
            block = rows[start:start + 256]
            if dtype == "BF16":
                handle.write(bfloat16_bits(block).tobytes())
            else:
                handle.write(block.astype(np.float16 if dtype == "F16" else np.float32).tobytes())


DRIFTS = ("0.01", "0.1", "0.5", "hard")
# The per-drift figures: name → (klcli arguments after P Q, dtype).
DRIFT_FIGURES = {
    "kl": (["kl", "--logits"], "float32"),
    "kl fast": (["kl", "--logits", "--precision", "fast"], "float32"),
    "kl float16": (["kl", "--logits"], "float16"),
    "kl float16 fast": (["kl", "--logits", "--precision", "fast"], "float16"),
    "js": (["js", "--logits"], "float32"),
    "js fast": (["js", "--logits", "--precision", "fast"], "float32"),
    "compare": (["compare"], "float32"),
    "compare fast": (["compare", "--precision", "fast"], "float32"),
}


def drifted(p: np.ndarray, drift: str, seed: int = 1) -> np.ndarray:
    """Q for a drift of issue 20: P + N(0, σ²) per logit, or the hard case P + 5 + N(0, 1e-8)."""
    rng = np.random.default_rng(seed)
    if drift == "hard":
        return p + 5 + rng.standard_normal(p.shape, dtype=np.float32) * np.float32(1e-4)
    return p + rng.standard_normal(p.shape, dtype=np.float32) * np.float32(float(drift))


def make_data(folder: Path, rows: int, vocab: int, wanted, drift: str = "0.5", csv_rows: int = 32) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    p = rng.standard_normal((rows, vocab), dtype=np.float32) * 2
    q = drifted(p, drift) if drift != "0.5" else p + rng.standard_normal((rows, vocab), dtype=np.float32) * 0.5
    files = {"p": folder / "p.npy", "q": folder / "q.npy", "labels": folder / "labels.npy"}
    np.save(files["p"], p)
    np.save(files["q"], q)
    np.save(files["labels"], rng.integers(0, vocab, size=rows))
    if any(wanted(name) for name in CANDIDATE_FIGURES):  # further candidates of other noise, for compare's K > 1
        for name, noise in (("q2", 0.3), ("q3", 0.7)):
            files[name] = folder / f"{name}.npy"
            np.save(files[name], p + rng.standard_normal((rows, vocab), dtype=np.float32) * noise)
    for each in DRIFTS:
        names = [f"{figure}@{each}" for figure in DRIFT_FIGURES]
        if not any(wanted(name) for name in names):
            continue
        files[f"q@{each}"] = folder / f"q@{each}.npy"
        other = drifted(p, each)
        np.save(files[f"q@{each}"], other)
        if any(wanted(f"{figure}@{each}") for figure, (_, dtype) in DRIFT_FIGURES.items() if dtype == "float16"):
            files["p16"] = folder / "p16.npy"
            if not files["p16"].exists():
                np.save(files["p16"], p.astype(np.float16))
            files[f"q16@{each}"] = folder / f"q16@{each}.npy"
            np.save(files[f"q16@{each}"], other.astype(np.float16))
        del other
    if wanted("compare tied"):  # issue 20 item 6: rows of equal logits (padding), and mostly tied ones
        tied = np.zeros((rows, vocab), dtype=np.float32)
        tied[1::2] = np.where(rng.random((rows // 2, vocab)) < 0.99, -1e4, p[1::2]).astype(np.float32)
        files["tied"] = folder / "tied.npy"
        np.save(files["tied"], tied)
        del tied
    if any(wanted(name) for name in ("kl float16", "kl float16 fast", "floor float16", "kl float16 npy")):
        files["p16"], files["q16"] = folder / "p16.npy", folder / "q16.npy"
        np.save(files["p16"], p.astype(np.float16))
        np.save(files["q16"], q.astype(np.float16))
    if wanted("kl bfloat16 safetensors"):
        for name, array in (("p", p), ("q", q)):
            files[f"{name}_bf16"] = folder / f"{name}.safetensors"
            save_safetensors(files[f"{name}_bf16"], "logits", array)
    if wanted("kl parquet") or wanted("pyarrow streams parquet") or wanted("pyarrow reads parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        for name, array in (("p", p), ("q", q)):
            column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), vocab)
            files[f"{name}_parquet"] = folder / f"{name}.parquet"
            pq.write_table(pa.table({"logits": pa.ListArray.from_arrays(
                pa.array(np.arange(0, rows * vocab + 1, vocab, dtype=np.int32)), column.flatten())}),
                files[f"{name}_parquet"], row_group_size=256)
    if wanted("kl csv") or wanted("pyarrow reads csv"):
        for name, array in (("p", p), ("q", q)):
            files[f"{name}_csv"] = folder / f"{name}.csv"
            np.savetxt(files[f"{name}_csv"], array[:csv_rows], delimiter=",", fmt="%.7g")
    return files


def commands(files: dict[str, Path], wanted) -> dict[str, list[str]]:
    klcli = [sys.executable, "-m", "klcli"]
    p, q, labels = files["p"], files["q"], files["labels"]
    table = {
        "floor": [sys.executable, "-c", FLOOR, str(p), str(q)],
        "import numpy": [sys.executable, "-c", "import numpy"],
        "klcli one-off": [*klcli, "kl", "0.5,0.5", "0.9,0.1", "-q"],
        "klcli --help": [*klcli, "--help"],
        "kl": [*klcli, "kl", str(p), str(q), "--logits", "-q"],
        "kl float32 npy": [*klcli, "kl", str(p), str(q), "--logits", "-q"],  # (the formats' peer)
        "kl --precision fast": [*klcli, "kl", str(p), str(q), "--logits", "--precision", "fast", "-q"],
        "xent": [*klcli, "xent", str(p), str(q), "--logits", "-q"],
        "js": [*klcli, "js", str(p), str(q), "--logits", "-q"],
        "compare": [*klcli, "compare", str(p), str(q), "-q"],
        "compare --labels": [*klcli, "compare", str(p), str(q), "--labels", str(labels), "-q"],
        "perplexity": [*klcli, "perplexity", str(p), "--labels", str(labels), "-q"],
        "perplexity fast": [*klcli, "perplexity", str(p), "--labels", str(labels), "--precision", "fast", "-q"],
    }
    if "q2" in files:
        q2, q3 = str(files["q2"]), str(files["q3"])
        table["compare 2 tests"] = [*klcli, "compare", str(p), str(q), q2, "-q"]
        table["compare 3 tests"] = [*klcli, "compare", str(p), str(q), q2, q3, "-q"]
        table["compare 3 --labels"] = [*klcli, "compare", str(p), str(q), q2, q3, "--labels", str(labels), "-q"]
    for each in DRIFTS:
        for figure, (arguments, dtype) in DRIFT_FIGURES.items():
            pair = (files.get("p16"), files.get(f"q16@{each}")) if dtype == "float16" else (p, files.get(f"q@{each}"))
            if pair[1] is not None:
                table[f"{figure}@{each}"] = [*klcli, arguments[0], str(pair[0]), str(pair[1]), *arguments[1:], "-q"]
    if "tied" in files:
        table["compare tied"] = [*klcli, "compare", str(files["tied"]), str(files["tied"]), "-q"]
    if "q16" in files:
        table["floor float16"] = [sys.executable, "-c", FLOOR16, str(files["p16"]), str(files["q16"])]
        table["kl float16"] = [*klcli, "kl", str(files["p16"]), str(files["q16"]), "--logits", "-q"]
        table["kl float16 npy"] = table["kl float16"]  # (beside kl float32 npy)
        table["kl float16 fast"] = [*klcli, "kl", str(files["p16"]), str(files["q16"]), "--logits", "--precision",
                                    "fast", "-q"]
    if "p_bf16" in files:
        table["kl bfloat16 safetensors"] = [*klcli, "kl", str(files["p_bf16"]), str(files["q_bf16"]), "--logits",
                                            "-q"]
    if "p_parquet" in files:
        table["pyarrow reads parquet"] = [sys.executable, "-c", READ_PARQUET, str(files["p_parquet"]),
                                          str(files["q_parquet"])]
        table["pyarrow streams parquet"] = [sys.executable, "-c", READ_PARQUET_STREAMED, str(files["p_parquet"]),
                                            str(files["q_parquet"])]
        table["kl parquet"] = [*klcli, "kl", str(files["p_parquet"]), str(files["q_parquet"]), "--logits", "-q"]
    if "p_csv" in files:
        table["pyarrow reads csv"] = [sys.executable, "-c", READ_CSV, str(files["p_csv"]), str(files["q_csv"])]
        table["kl csv"] = [*klcli, "kl", str(files["p_csv"]), str(files["q_csv"]), "--logits", "-q"]
    try:
        import scipy  # noqa: F401

        table["scipy script"] = [sys.executable, "-c", SCIPY, str(p), str(q)]
    except ImportError:
        print("scipy is not installed: its script is skipped", file=sys.stderr)
    try:
        import torch  # noqa: F401

        table["torch script"] = [sys.executable, "-c", TORCH, str(p), str(q)]
        table["torch 32-row chunks"] = [sys.executable, "-c", TORCH_CHUNKED, str(p), str(q)]
    except ImportError:
        print("torch is not installed: its script is skipped", file=sys.stderr)
    return table


# Every figure runs as an installed program does: with its bytecode cached (the warm-up writes klcli's,
# as pip does at install), even where the caller's environment sets PYTHONDONTWRITEBYTECODE.
CHILD_ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run_once(command: list[str]) -> tuple[float, int, float]:
    """Wall seconds, the peak resident anonymous memory (KiB) seen by polling /proc every 2 ms, and CPU seconds.

    Anonymous memory is the process's own allocations; memory-mapped input
    pages are file-backed and belong to the page cache, so they are not counted.
    CPU time (user + system, all threads) is less disturbed than wall time by
    other work on a shared machine, so ratios between figures are also given in it.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=CHILD_ENVIRONMENT)
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while True:
        pid, code, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    process.returncode = os.waitstatus_to_exitcode(code)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return time.perf_counter() - start, peak, usage.ru_utime + usage.ru_stime


def interleaved(table: dict, repeat: int) -> tuple[dict, dict, dict]:
    """Each command's wall seconds and CPU seconds (lists) and peak anonymous KiB, after one warm-up round
    (page cache, bytecode): ``repeat`` rounds in which every command runs once, in turn, so that all see the
    same machine state."""
    for command in table.values():
        run_once(command)
    times: dict = {key: [] for key in table}
    cpu: dict = {key: [] for key in table}
    memory: dict = {key: 0 for key in table}
    for _ in range(repeat):
        for key, command in table.items():
            seconds, peak, cpu_seconds = run_once(command)
            times[key].append(seconds)
            cpu[key].append(cpu_seconds)
            memory[key] = max(memory[key], peak)
    return times, memory, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--drift", default="0.1", help="the std of Q − P for the command figures (or 'hard')")
    parser.add_argument("--csv-rows", type=int, default=32, help="the rows of the CSV figures (the first of P, Q)")
    parser.add_argument("--only", help="comma-separated names of the figures to run (floor is always run)")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="klcli-bench-"))
    chosen = {"floor", *options.only.split(",")} if options.only else None

    def wanted(name: str) -> bool:
        return chosen is None or name in chosen

    try:
        table = {name: command for name, command in commands(make_data(folder, options.rows, options.vocab, wanted,
                                                                       options.drift, options.csv_rows),
                                                             wanted).items() if wanted(name)}
        times, memory, cpu = interleaved(table, options.repeat)
        floor = statistics.median(times["floor"])
        print(f"{options.rows}×{options.vocab} float32 logits, Q = P + noise of std {options.drift} "
              f"(CSV: the first {min(options.csv_rows, options.rows)} rows), median of "
              f"{options.repeat} whole-process runs, {os.cpu_count()} cores")
        print(f"{'figure':<23} {'seconds':>8} {'× floor':>8} {'× kl':>8} {'anon MiB':>9} {'cpu s':>8} "
              f"{'× default':>9} {'× peer':>7}")
        floor16 = statistics.median(times["floor float16"]) if "floor float16" in times else None
        kl = statistics.median(times["kl"]) if "kl" in times else None
        for name, samples in times.items():
            median = statistics.median(samples)
            versus_kl = f"{median / kl:8.2f}" if kl else f"{'':>8}"
            versus_floor = median / (floor16 if floor16 and " float16" in name else floor)  # (not bfloat16)
            # A --precision fast figure beside its command's default precision on the same data (same run).
            default = name.replace(" fast", "").replace(" --precision", "")
            versus_default = (f"{median / statistics.median(times[default]):9.2f}"
                              if " fast" in name and default in times else "")
            # A format figure beside its peer of the same run (PEERS): the targets of issue 20 item 5.
            peer = PEERS.get(name)
            versus_peer = (f"{median / statistics.median(times[peer]):7.2f}" if peer in times else "")
            print(f"{name:<23} {median:8.3f} {versus_floor:8.2f} {versus_kl} {memory[name] / 1024:9.0f} "
                  f"{statistics.median(cpu[name]):8.3f} {versus_default:>9} {versus_peer}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
