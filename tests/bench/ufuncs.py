"""What one NumPy pass costs here, per element: the arithmetic the kernels are made of (issue 20's floors).

    python -m tests.bench.ufuncs [--elements 65536] [--repeat 300]

Times each ufunc on arrays that stay in the cache (the kernels work on pieces of that size), best of
``--repeat`` calls, and prints nanoseconds per element beside the SIMD extensions NumPy found on this
machine: which transcendental functions are vectorised decides the kernels' cost far more than the
passes over memory do. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 16)
    parser.add_argument("--repeat", type=int, default=300)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {}
    for dtype in (np.float64, np.float32):
        x = (rng.standard_normal(options.elements) * 0.1).astype(dtype)  # differences of logits
        logits = rng.standard_normal(options.elements) * 2
        shifted = (logits - logits.max()).astype(dtype)  # max-shifted logits, what e^z is taken of
        positive = np.abs(x) + dtype(0.5)
        out = np.empty_like(x)
        name = np.dtype(dtype).name
        cases.update({
            f"exp {name}": lambda x=shifted, out=out: np.exp(x, out=out),
            f"expm1 {name}": lambda x=x, out=out: np.expm1(x, out=out),
            f"log {name}": lambda p=positive, out=out: np.log(p, out=out),
            f"log1p {name}": lambda p=positive, out=out: np.log1p(p, out=out),
            f"multiply {name}": lambda x=x, out=out: np.multiply(x, x, out=out),
            f"sum {name}": lambda x=x: np.sum(x),
        })
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features

        found = [name for name in ("AVX2", "FMA3", "AVX512F", "AVX512_SKX") if features.get(name)]
    except ImportError:  # an older NumPy's layout
        found = []
    print(f"NumPy {np.__version__}; CPU features found: {', '.join(found) or 'unknown'}; "
          f"{options.elements} elements, best of {options.repeat}")
    for name, call in cases.items():
        call()
        best = float("inf")
        for _ in range(options.repeat):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        print(f"{name:<18} {best / options.elements * 1e9:7.2f} ns/element")


if __name__ == "__main__":
    main()
