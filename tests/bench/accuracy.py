"""The accuracy figures of README › Performance, on the benchmark's own data.

    python -m tests.bench.accuracy [--rows 4096] [--vocab 32000]

Generates the same logits as ``tests.bench.run`` (same seed), runs ``klcli kl``
at both precisions and ``klcli perplexity --precision fast`` as a user would
(``--json --per-row``), and compares every row with an extended-precision
(numpy.longdouble) reference. Also reports how far the fast kernels' own error
estimates stand above the largest error measured.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="klcli-accuracy-"))
    try:
        files = make_data(folder, options.rows, options.vocab, lambda name: False)
        p, q = np.load(files["p"], mmap_mode="r"), np.load(files["q"], mmap_mode="r")
        labels = np.load(files["labels"])
        kl_reference, nll_reference, kl_margin, nll_margin, nll_error = [], [], np.inf, np.inf, 0.0
        for start in range(0, options.rows, CHUNK):
            z, y = np.asarray(p[start:start + CHUNK]), np.asarray(q[start:start + CHUNK])
            rows = reference.kl(z, y)
            kl_reference.append(rows)
            estimate, error = fast.kl_estimate(z, y)
            kl_margin = min(kl_margin, float(np.min(error / np.abs(estimate - rows))))
            nll_reference.append(reference.token_nll(z, labels[start:start + CHUNK]))
            log_mass, error = fast.log_normaliser(z)
            difference = np.abs(log_mass - reference.log_normaliser(z))
            nll_margin = min(nll_margin, float(np.min(error / difference)))
            nll_error = max(nll_error, float(np.max(difference)))
        kl_rows, nll_rows = np.concatenate(kl_reference), np.concatenate(nll_reference)
        print(f"{options.rows}×{options.vocab} float32 logits; reference: numpy.longdouble")
        print(f"reference mean KL                {float(np.mean(kl_rows))!r}")
        for name, extra in (("kl", []), ("kl --precision fast", ["--precision", "fast"])):
            doc = klcli_json("kl", str(files["p"]), str(files["q"]), "--logits", *extra)
            got = np.array(doc["per_row"]["kl"])
            print(f"{name:<32} mean {doc['value']!r}: {abs(doc['value'] / np.mean(kl_rows) - 1):.1e} relative; "
                  f"rows within {float(np.max(np.abs(got / kl_rows - 1))):.1e} relative")
        print(f"fast KL error estimate           ≥ {kl_margin:.0f}× the measured error of every row")
        doc = klcli_json("perplexity", str(files["p"]), "--labels", str(files["labels"]), "--precision", "fast")
        perplexity = float(np.exp(np.mean(nll_rows)))
        print(f"perplexity --precision fast      {doc['value']!r} against {perplexity!r}: "
              f"{abs(doc['value'] / perplexity - 1):.1e} relative")
        print(f"fast log Z                       largest error {nll_error:.1e} nats; "
              f"the estimate ≥ {nll_margin:.0f}× it on every row")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
