"""The accuracy figures of README › Performance, on the benchmark's own data.

    python -m tests.bench.accuracy [--rows 4096] [--vocab 32000] [--drifts 0.01,0.1,0.5,hard]

Generates the same logits as ``tests.bench.run`` (same seed; Q for each drift of issue 20), runs ``klcli kl``
at both precisions and ``klcli perplexity --precision fast`` as a user would
(``--json --per-row``), and compares every row with an extended-precision
(numpy.longdouble) reference. Also reports how far the fast kernels' own bounds
stand above the largest error measured, and how many rows fast mode assured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from klcli.core import fast
from tests import reference
from tests.bench.run import CHILD_ENVIRONMENT, make_data

CHUNK = 64  # rows per longdouble pass (about 30 MB of it per side)


def klcli_json(*arguments: str) -> dict:
    command = [sys.executable, "-m", "klcli", *arguments, "--json", "--per-row"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                     env=CHILD_ENVIRONMENT).stdout)


def _kl_figures(p_path: Path, q_path: Path, drift: str, rows: int) -> None:
    p, q = np.load(p_path, mmap_mode="r"), np.load(q_path, mmap_mode="r")
    expected, margin, assured = [], np.inf, 0
    for start in range(0, rows, CHUNK):
        z, y = np.asarray(p[start:start + CHUNK]), np.asarray(q[start:start + CHUNK])
        reference_rows = reference.kl(z, y).astype(np.float64)
        expected.append(reference_rows)
        estimate, bound = fast.kl_estimate(z, y)
        finite = np.isfinite(bound)
        margin = min(margin, float(np.min(bound[finite] / np.abs(estimate - reference_rows)[finite]))
                     if finite.any() else np.inf)
        assured += int(np.count_nonzero(fast.assured(estimate, bound)))
    kl_rows = np.concatenate(expected)
    print(f"drift {drift}: reference mean KL {float(np.mean(kl_rows))!r}")
    for name, extra in (("kl", []), ("kl --precision fast", ["--precision", "fast"])):
        doc = klcli_json("kl", str(p_path), str(q_path), "--logits", *extra)
        got = np.array(doc["per_row"]["kl"])
        print(f"  {name:<30} mean {doc['value']!r}: {abs(doc['value'] / np.mean(kl_rows) - 1):.1e} relative; "
              f"rows within {float(np.max(np.abs(got / kl_rows - 1))):.1e} relative")
    print(f"  fast: {assured} of {rows} rows assured (the rest recomputed precisely); "
          f"bound ≥ {margin:.0f}× the measured error of every row")


def _perplexity_figures(files: dict[str, Path], rows: int) -> None:
    p = np.load(files["p"], mmap_mode="r")
    labels = np.load(files["labels"])
    nll_reference, nll_margin, nll_error = [], np.inf, 0.0
    for start in range(0, rows, CHUNK):
        z = np.asarray(p[start:start + CHUNK])
        nll_reference.append(reference.token_nll(z, labels[start:start + CHUNK]))
        log_mass, error = fast.log_normaliser(z)
        difference = np.abs(log_mass - reference.log_normaliser(z))
        nll_margin = min(nll_margin, float(np.min(error / difference)))
        nll_error = max(nll_error, float(np.max(difference)))
    nll_rows = np.concatenate(nll_reference)
    doc = klcli_json("perplexity", str(files["p"]), "--labels", str(files["labels"]), "--precision", "fast")
    perplexity = float(np.exp(np.mean(nll_rows)))
    print(f"perplexity --precision fast      {doc['value']!r} against {perplexity!r}: "
          f"{abs(doc['value'] / perplexity - 1):.1e} relative")
    print(f"fast log Z                       largest error {nll_error:.1e} nats; "
          f"the estimate ≥ {nll_margin:.0f}× it on every row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--drifts", default="0.01,0.1,0.5,hard")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="klcli-accuracy-"))
    try:
        drifts = options.drifts.split(",")
        files = make_data(folder, options.rows, options.vocab, lambda name: name in [f"kl@{d}" for d in drifts])
        print(f"{options.rows}×{options.vocab} float32 logits; reference: numpy.longdouble")
        for drift in drifts:
            _kl_figures(files["p"], files[f"q@{drift}"], drift, options.rows)
        _perplexity_figures(files, options.rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
