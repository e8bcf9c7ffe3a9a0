"""Top-K reference files: their bias, size and speed against the full logits (python -m tests.bench.reference).

For each data set and K: the relative gap between compare's mean and p99 KL on a reference and on the full
logits (1 − reference/full; ≥ 0, since the reference's figures are lower bounds), the file's size against the
float32 .npy and against a llama.cpp base file for the same positions, and the whole-process time of
``compare REF TEST`` against ``compare BASE TEST`` (alternating, median of --repeat runs).

Data sets: the benchmark's logits (tests/bench/run.py make_data: Gaussian logits of std 2, a flat worst case
for a top-K summary), the same size with a Zipf-shaped base (log-probabilities falling as −1.1·log rank, as
language models' do roughly), and the project's sample fixtures (teacher/student, and the llama.cpp base file
with its ported logits). None of them are a real model's logits.
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

import klcli
from klcli.io.llama import layout
from tests.bench.run import make_data
from tests.conftest import SAMPLES


def llama_bytes(rows: int, vocab: int, n_ctx: int = 512) -> float:
    """A llama.cpp base file's bytes for ``rows`` scored positions: its per-row words and its tokens (n_ctx per
    chunk of n_ctx/2 − 1 scored rows), pro rata, so that whole chunks do not round the comparison."""
    rows_per_chunk, words, _ = layout(n_ctx, vocab, 1)
    return 20 + rows * (2 * words + 4 * n_ctx / rows_per_chunk)


def zipf_pair(folder: Path, rows: int, vocab: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    rank_logits = (-1.1 * np.log(np.arange(1, vocab + 1))).astype(np.float32)
    base = np.empty((rows, vocab), dtype=np.float32)
    for start in range(0, rows, 256):
        block = np.tile(rank_logits, (min(256, rows - start), 1)) + rng.normal(0, 0.5, (min(256, rows - start), vocab))
        base[start : start + block.shape[0]] = np.take_along_axis(block, rng.permuted(
            np.tile(np.arange(vocab), (block.shape[0], 1)), axis=1), axis=1)
    test = base + rng.normal(0, 0.5, base.shape).astype(np.float32)
    np.save(folder / "zipf_p.npy", base)
    np.save(folder / "zipf_q.npy", test)
    return folder / "zipf_p.npy", folder / "zipf_q.npy"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--ks", default="16,64,256")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    ks = [int(k) for k in options.ks.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="klcli-bench-reference-"))
    try:
        files = make_data(folder, options.rows, options.vocab, lambda name: False)
        zipf_p, zipf_q = zipf_pair(folder, options.rows, options.vocab)
        datasets = {
            f"benchmark {options.rows}×{options.vocab}": (files["p"], files["q"], "logits"),
            f"zipf {options.rows}×{options.vocab}": (zipf_p, zipf_q, "logits"),
            "sample teacher/student 64×100": (SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy",
                                              "logits"),
            "sample base.kld/ported 14×50": (SAMPLES / "base.kld", SAMPLES / "ported_logits.npy", "logits"),
        }
        print(f"{'data':<30} {'K':>5} {'mean KL':>10} {'gap mean':>9} {'p99 KL':>10} {'gap p99':>9} "
              f"{'tail':>7} {'bytes':>11} {'× .npy':>8} {'× llama':>8}")
        for name, (base, test, _kind) in datasets.items():
            full = klcli.run("compare", str(base), str(test))
            vocab = full["vocab"]
            rows = full["rows"]
            npy_bytes = rows * vocab * 4
            for k in [k for k in ks if k < vocab] + ([vocab] if vocab <= 100 else []):
                ref = folder / f"ref{k}.safetensors"
                written = klcli.run("reference", str(base), top_k=k, output=str(ref))
                on_ref = klcli.run("compare", str(ref), str(test))
                size = ref.stat().st_size
                gap_mean = 1 - on_ref["kl"]["mean"] / full["kl"]["mean"]
                gap_p99 = 1 - on_ref["kl"]["p99"] / full["kl"]["p99"]
                print(f"{name:<30} {k:>5} {on_ref['kl']['mean']:>10.4g} {gap_mean:>9.2%} {on_ref['kl']['p99']:>10.4g}"
                      f" {gap_p99:>9.2%} {written['value']:>7.3f} {size:>11,} {npy_bytes / size:>8.1f} "
                      f"{llama_bytes(rows, vocab) / size:>8.1f}")
            print(f"{name:<30} {'full':>5} {full['kl']['mean']:>10.4g} {'':>9} {full['kl']['p99']:>10.4g}")
        # Speed: compare on the benchmark's full logits against compare on a K=64 reference of them.
        ref = folder / "speed.safetensors"
        klcli.run("reference", str(files["p"]), top_k=64, output=str(ref))
        klcli_command = [sys.executable, "-m", "klcli", "compare"]
        runs = {"compare BASE TEST": [*klcli_command, str(files["p"]), str(files["q"]), "-q"],
                "compare REF TEST (K=64)": [*klcli_command, str(ref), str(files["q"]), "-q"]}
        for command in runs.values():
            timed(command)  # warm-up: page cache, imports
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(options.repeat):
            for label, command in runs.items():
                times[label].append(timed(command))
        medians = {label: statistics.median(samples) for label, samples in times.items()}
        base_time = medians["compare BASE TEST"]
        print(f"\nwhole-process time, median of {options.repeat} alternating runs on {os.cpu_count()} shared cores")
        for label, seconds in medians.items():
            print(f"{label:<26} {seconds:>8.3f} s {seconds / base_time:>6.2f}×")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
