"""Scaling-out benchmark (issue 16's figures), as ratios measured in one run.

    python -m tests.bench.scale [--pieces 8] [--rows-per-piece 512] [--vocab 32000] [--repeat 1]

Writes float32 logits P and Q of pieces × rows-per-piece rows (std 2; Q = P +
noise of std 0.5) as .npy files in a temporary folder, then times, each as
separate processes: one process over every row; ``--jobs 2``; ``--engine dask
--scheduler local:2`` (cluster start-up included); the pieces as ``--partial
--piece K/N`` jobs run two at a time (as ``xargs -P 2`` would) followed by
``klcli merge``. Every route's ``--json --per-row`` output is compared with the
one-process output. Then ``klcli merge`` of 64 partials of 4096 rows each, and
the per-row figures the README's cost model uses (time per row, partial bytes
per row). Nothing here is a test; the suite never times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

KLCLI = [sys.executable, "-m", "klcli"]


def _run(args: list[str]) -> bytes:
    done = subprocess.run(KLCLI + args, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"klcli {' '.join(args)} failed: {done.stderr.decode()}")
    return done.stdout


def _timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    out = action()
    return time.perf_counter() - start, out


def _write_logits(folder: Path, rows: int, vocab: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    p_path, q_path = folder / "p.npy", folder / "q.npy"
    p = np.lib.format.open_memmap(p_path, mode="w+", dtype=np.float32, shape=(rows, vocab))
    q = np.lib.format.open_memmap(q_path, mode="w+", dtype=np.float32, shape=(rows, vocab))
    for start in range(0, rows, 256):
        block = rng.normal(scale=2.0, size=(min(256, rows - start), vocab)).astype(np.float32)
        p[start : start + block.shape[0]] = block
        q[start : start + block.shape[0]] = block + rng.normal(scale=0.5, size=block.shape).astype(np.float32)
    p.flush(), q.flush()
    del p, q
    return str(p_path), str(q_path)


def _partials_then_merge(args: list[str], folder: Path, pieces: int) -> bytes:
    parts = [str(folder / f"part-{k}.klp") for k in range(1, pieces + 1)]
    with ThreadPoolExecutor(2) as pool:  # two at a time: this machine's cores, as xargs -P 2
        list(pool.map(lambda k: _run(args + ["--partial", parts[k - 1], "--piece", f"{k}/{pieces}", "--threads",
                                             "1"]), range(1, pieces + 1)))
    out = _run(["merge", *parts, "--json", "--per-row"])
    for part in parts:
        os.unlink(part)
    return out


def _merge_64(folder: Path) -> tuple[float, int]:
    """64 partials of 4096 rows each (kl over 8-wide logits, written by the Python API), merged by one process."""
    from klcli.io.partial_file import encode
    from klcli.runner import plan

    rows = 64 * 4096
    np.save(folder / "small_p.npy", np.random.default_rng(1).normal(size=(rows, 8)).astype(np.float32))
    np.save(folder / "small_q.npy", np.random.default_rng(2).normal(size=(rows, 8)).astype(np.float32))
    planned = plan("kl", str(folder / "small_p.npy"), str(folder / "small_q.npy"), logits=True)
    size = 0
    for k in range(64):
        piece = planned.split.map((k * 4096, (k + 1) * 4096), None)
        data = encode("kl", list(planned.arguments), planned.options, piece, total=rows)
        (folder / f"m-{k}.klp").write_bytes(data)
        size += len(data)
    seconds, _ = _timed(lambda: _run(["merge", str(folder / "m-*.klp"), "--json"]))
    return seconds, size // 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--rows-per-piece", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()
    rows = options.pieces * options.rows_per_piece
    with tempfile.TemporaryDirectory(prefix="klcli-scale-") as name:
        folder = Path(name)
        p, q = _write_logits(folder, rows, options.vocab)
        base = ["kl", p, q, "--logits"]
        routes = {
            "one process": lambda: _run(base + ["--json", "--per-row"]),
            "--jobs 2": lambda: _run(base + ["--json", "--per-row", "--jobs", "2"]),
            "--engine dask local:2": lambda: _run(base + ["--json", "--per-row", "--engine", "dask", "--scheduler",
                                                          "local:2"]),
            f"{options.pieces} × --partial (2 at a time) + merge": lambda: _partials_then_merge(base, folder,
                                                                                              options.pieces),
        }
        _run(base + ["-q"])  # warm-up: page cache and bytecode
        times: dict[str, list[float]] = {name: [] for name in routes}
        outputs: dict[str, object] = {}
        for _ in range(options.repeat):
            for route, action in routes.items():
                seconds, outputs[route] = _timed(action)
                times[route].append(seconds)
        reference = outputs["one process"]
        one = statistics.median(times["one process"])
        print(f"kl over {rows} rows × {options.vocab} float32 logits per side ({options.pieces} pieces of "
              f"{options.rows_per_piece}); median of {options.repeat}; {os.cpu_count()} cores")
        for route in routes:
            median = statistics.median(times[route])
            same = "identical output" if outputs[route] == reference else "OUTPUT DIFFERS"
            print(f"  {route:<40} {median:7.2f} s  {median / one:5.2f}×  {same}")
        print(f"  per row, one process: {one / rows * 1e3:.3f} ms ({rows / one:,.0f} rows/s, "
              f"{2 * rows * options.vocab * 4 / one / 2**20:,.0f} MiB/s read)")
        seconds, part_bytes = _merge_64(folder)
        print(f"klcli merge of 64 partials of 4096 rows (kl): {seconds:.2f} s; {part_bytes:,} bytes per partial "
              f"({part_bytes / 4096:.1f} bytes per row)")
        planned_compare = __import__("klcli.runner", fromlist=["plan"]).plan(
            "compare", p, q, labels=None, top_k=5)
        piece = planned_compare.split.map((0, options.rows_per_piece), None)
        from klcli.io.partial_file import encode

        size = len(encode("compare", [p, q], planned_compare.options, piece))
        print(f"compare partial: {size / options.rows_per_piece:.1f} bytes per row (kl, kl_reverse, js, tv, top-1, "
              "top-k overlap, row)")


if __name__ == "__main__":
    main()
