"""Whole-process benchmarks of klcli against its peers, as ratios measured in one run.

    python -m tests.bench.run [--rows 4096] [--vocab 32000] [--repeat 5] [--only kl,compare]

Generates random logits (std 2; Q = P + noise of std 0.5) as float32 .npy files
in a temporary folder, then times each command as a separate process: one
warm-up, then ``--repeat`` rounds in which every command runs once, in turn,
so that peers and klcli see the same machine state. Prints the median wall
time of each and its ratio to the memory floor (a process that memory-maps
both files and sums each once). Peers that are not installed (scipy, torch)
are skipped and said so. Nothing here is a test; the suite never times.
"""

from __future__ import annotations

import argparse
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

TORCH = """
import sys, numpy as np, torch
import torch.nn.functional as F
p, q = (torch.from_numpy(np.load(path)) for path in sys.argv[1:3])
kl = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), log_target=True, reduction="none").sum(-1)
print(kl.mean().item())
"""


def make_data(folder: Path, rows: int, vocab: int) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    p = rng.standard_normal((rows, vocab), dtype=np.float32) * 2
    q = p + rng.standard_normal((rows, vocab), dtype=np.float32) * 0.5
    np.save(folder / "p.npy", p)
    np.save(folder / "q.npy", q)
    np.save(folder / "labels.npy", rng.integers(0, vocab, size=rows))
    return folder / "p.npy", folder / "q.npy", folder / "labels.npy"


def commands(p: Path, q: Path, labels: Path) -> dict[str, list[str]]:
    klcli = [sys.executable, "-m", "klcli"]
    table = {
        "floor": [sys.executable, "-c", FLOOR, str(p), str(q)],
        "kl": [*klcli, "kl", str(p), str(q), "--logits", "-q"],
        "xent": [*klcli, "xent", str(p), str(q), "--logits", "-q"],
        "js": [*klcli, "js", str(p), str(q), "--logits", "-q"],
        "compare": [*klcli, "compare", str(p), str(q), "-q"],
        "compare --labels": [*klcli, "compare", str(p), str(q), "--labels", str(labels), "-q"],
        "perplexity": [*klcli, "perplexity", str(p), "--labels", str(labels), "-q"],
    }
    try:
        import scipy  # noqa: F401

        table["scipy script"] = [sys.executable, "-c", SCIPY, str(p), str(q)]
    except ImportError:
        print("scipy is not installed: its script is skipped", file=sys.stderr)
    try:
        import torch  # noqa: F401

        table["torch script"] = [sys.executable, "-c", TORCH, str(p), str(q)]
    except ImportError:
        print("torch is not installed: its script is skipped", file=sys.stderr)
    return table


def run_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="comma-separated names of the figures to run (floor is always run)")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="klcli-bench-"))
    try:
        table = commands(*make_data(folder, options.rows, options.vocab))
        if options.only:
            wanted = {"floor", *options.only.split(",")}
            table = {name: command for name, command in table.items() if name in wanted}
        for command in table.values():  # warm-up: page cache, imports
            run_once(command)
        times: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(options.repeat):
            for name, command in table.items():
                times[name].append(run_once(command))
        floor = statistics.median(times["floor"])
        print(f"{options.rows}×{options.vocab} float32 logits, median of {options.repeat} whole-process runs")
        print(f"{'figure':<20} {'seconds':>8} {'× floor':>8} {'× kl':>8}")
        kl = statistics.median(times["kl"]) if "kl" in times else None
        for name, samples in times.items():
            median = statistics.median(samples)
            versus_kl = f"{median / kl:8.2f}" if kl else f"{'':>8}"
            print(f"{name:<20} {median:8.3f} {median / floor:8.2f} {versus_kl}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
