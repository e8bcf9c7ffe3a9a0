"""Cost per element by vocabulary size (issue 20 item 4): the same number of values, rows of different widths.

    python -m tests.bench.vocab [--values 131072000] [--vocabs 32000,128256,256000] [--repeat 3]
                               [--only kl,compare,perplexity]

For each vocabulary V it writes float32 logits of ``--values // V`` rows (std 2; Q = P + noise of std
0.1) and labels, then times every figure at every V as whole processes, interleaved — each round runs
each command once at each V, in turn — so that all the sizes see the same machine state. Prints the
median wall time, the nanoseconds per value (time over the values of one side), its ratio to the
first vocabulary's, and the peak anonymous memory. The floor (memory-mapping both files and summing
each once) is timed the same way. Nothing here is a test; the suite never times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.bench.run import FLOOR, interleaved

FIGURES = {
    "floor": lambda p, q, labels: [sys.executable, "-c", FLOOR, p, q],
    "kl": lambda p, q, labels: [sys.executable, "-m", "klcli", "kl", p, q, "--logits", "-q"],
    "kl fast": lambda p, q, labels: [sys.executable, "-m", "klcli", "kl", p, q, "--logits", "--precision", "fast",
                                     "-q"],
    "compare": lambda p, q, labels: [sys.executable, "-m", "klcli", "compare", p, q, "-q"],
    "perplexity": lambda p, q, labels: [sys.executable, "-m", "klcli", "perplexity", p, "--labels", labels, "-q"],
}


def write(folder: Path, vocab: int, rows: int) -> tuple[str, str, str]:
    rng = np.random.default_rng(vocab)
    p = rng.standard_normal((rows, vocab), dtype=np.float32) * 2
    paths = tuple(str(folder / f"{name}{vocab}.npy") for name in ("p", "q", "labels"))
    np.save(paths[0], p)
    p += rng.standard_normal((rows, vocab), dtype=np.float32) * np.float32(0.1)
    np.save(paths[1], p)
    np.save(paths[2], rng.integers(0, vocab, size=rows))
    return paths  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=131_072_000, help="values per side at every vocabulary")
    parser.add_argument("--vocabs", default="32000,128256,256000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="kl,compare,perplexity", help="figures besides the floor")
    options = parser.parse_args()
    vocabs = [int(v) for v in options.vocabs.split(",")]
    names = ["floor", *[name for name in options.only.split(",") if name != "floor"]]
    folder = Path(tempfile.mkdtemp(prefix="klcli-vocab-"))
    try:
        files = {vocab: write(folder, vocab, max(1, options.values // vocab)) for vocab in vocabs}
        table = {(name, vocab): FIGURES[name](*files[vocab]) for name in names for vocab in vocabs}
        times, memory, _ = interleaved(table, options.repeat)
        print(f"{options.values:,} float32 values per side (rows = values // V), Q = P + noise of std 0.1, "
              f"median of {options.repeat} whole-process runs, interleaved")
        print(f"{'figure':<12} {'V':>7} {'rows':>6} {'seconds':>8} {'ns/value':>9} {'× first V':>9} {'anon MiB':>9}")
        for name in names:
            first = None
            for vocab in vocabs:
                rows = max(1, options.values // vocab)
                median = statistics.median(times[(name, vocab)])
                per_value = median / (rows * vocab) * 1e9
                first = per_value if first is None else first
                print(f"{name:<12} {vocab:>7} {rows:>6} {median:8.3f} {per_value:9.2f} {per_value / first:9.2f} "
                      f"{memory[(name, vocab)] / 1024:9.0f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
