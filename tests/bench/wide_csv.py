"""Wide CSV files: the time klcli takes to read one, by its number of columns (issue 21: it was quadratic).

    python -m tests.bench.wide_csv [--columns 10000,80000,300000] [--rows 2] [--repeat 3]

Writes random logits (rows × columns, ``%.6g``) as CSV in a temporary folder and
times ``klcli kl FILE FILE --logits -q`` as a whole process (median of
``--repeat`` runs), with its peak resident memory. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", default="10000,80000,300000")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="klcli-wide-"))
    try:
        print(f"{'columns':>8} {'MB':>6} {'seconds':>8} {'peak MiB':>9}")
        for columns in map(int, options.columns.split(",")):
            path = folder / f"w{columns}.csv"
            np.savetxt(path, np.random.default_rng(0).standard_normal((options.rows, columns)), delimiter=",",
                       fmt="%.6g")
            times, peak = [], 0
            for _ in range(options.repeat):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "klcli", "kl", str(path), str(path), "--logits", "-q"],
                               check=True, stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
                peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            print(f"{columns:>8} {path.stat().st_size / 1e6:6.1f} {statistics.median(times):8.2f} {peak / 1024:9.0f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
