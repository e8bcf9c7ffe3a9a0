"""Golden outputs: a fixed list of CLI invocations, every command and output format, and what they printed.

    python -m tests.golden.make_golden        # rewrite tests/golden/outputs.json from this checkout's code

The inputs are the sample data and a small copy of the benchmark's data (made by
``tests.bench.run.make_data`` with its fixed seed). ``tests/golden/test_golden.py``
runs the same invocations and compares every figure with the stored one
(1e-12 relative), so a refactoring that changes what the CLI prints is seen.
Regenerate the file only when a change of figures is intended, and say so.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = Path(__file__).resolve().parent / "outputs.json"
BENCH_ROWS, BENCH_VOCAB = 48, 1500


def make_bench(folder: Path) -> dict[str, str]:
    """The benchmark's data, small: float32 logits P, Q (Q = P + noise), labels, float16, Parquet and CSV copies."""
    import numpy as np

    from tests.bench.run import make_data

    make_data(folder, BENCH_ROWS, BENCH_VOCAB, lambda name: True)
    files = {name: Path(path) for name, path in make_bench_names(folder).items()}
    rng = np.random.default_rng(1)
    labels = np.asarray(rng.integers(0, BENCH_VOCAB, size=BENCH_ROWS))
    labels[::7] = -100
    np.save(files["labels_ignored"], labels)
    np.save(files["p3d"], np.load(files["p"]).reshape(4, BENCH_ROWS // 4, BENCH_VOCAB))
    np.save(files["labels2d"], np.load(files["labels"]).reshape(4, BENCH_ROWS // 4))
    return {name: str(path) for name, path in files.items()}


def make_bench_names(folder: Path) -> dict[str, str]:
    """The files make_bench writes, by name."""
    names = {"p": "p.npy", "q": "q.npy", "labels": "labels.npy", "p16": "p16.npy", "q16": "q16.npy",
             "p_parquet": "p.parquet", "q_parquet": "q.parquet", "p_csv": "p.csv", "q_csv": "q.csv",
             "labels_ignored": "labels_ignored.npy", "p3d": "p3d.npy", "labels2d": "labels2d.npy"}
    return {name: str(folder / file) for name, file in names.items()}


def cases(samples: str, bench: dict[str, str]) -> dict[str, list[str]]:
    """Name → argv (without ``klcli``). Table cases are rendered at COLUMNS=100 without colour."""
    s = f"{samples}/"
    p, q, b = f"{s}p.csv", f"{s}q.csv", bench
    teacher, student = f"{s}teacher_logits.npy", f"{s}student_logits.npy"
    lm, ids = f"{s}lm_logits.npy", f"{s}lm_labels.npy"
    policy, ref = f"{s}rlhf.npz:policy", f"{s}rlhf.npz:ref"
    return {
        "kl inline -q": ["kl", "0.5,0.5", "0.9,0.1", "-q"],
        "kl inline rows": ["kl", "0.1,0.9;0.5,0.5", "0.3,0.7", "--json", "--per-row"],
        "kl csv json": ["kl", p, q, "--json", "--per-row"],
        "kl csv table": ["kl", p, q],
        "kl csv per-row table": ["kl", p, q, "--per-row", "--bits"],
        "kl tsv": ["kl", f"{s}p.tsv", f"{s}q.tsv", "--json"],
        "kl parquet": ["kl", f"{s}p.parquet", f"{s}q.parquet", "--json", "--per-row"],
        "kl feather": ["kl", f"{s}p.feather", f"{s}q.feather", "--json"],
        "kl npz": ["kl", f"{s}pq.npz:p", f"{s}pq.npz:q", "--json", "--per-row"],
        "kl npy csv format": ["kl", f"{s}p.npy", f"{s}q.npy", "--format", "csv"],
        "kl npy ndjson": ["kl", f"{s}p.npy", f"{s}q.npy", "--format", "ndjson", "--bits"],
        "kl logits": ["kl", teacher, student, "--logits", "--json", "--per-row"],
        "kl logits both bits": ["kl", teacher, student, "--logits", "--direction", "both", "--bits", "--json",
                                "--per-row"],
        "kl logits reverse base10": ["kl", teacher, student, "--logits", "--direction", "reverse", "--base", "10",
                                     "--json"],
        "kl t2": ["kl", teacher, student, "--logits", "-T", "2", "--t2-scale", "--json", "--per-row"],
        "kl epsilon": ["kl", "0.5,0.5,0", "0.9,0,0.1", "--epsilon", "0.01", "--json"],
        "kl inf": ["kl", "0.5,0.5", "1,0", "--json"],
        "kl normalize": ["kl", f"{s}counts.csv", "1,1,1,1,1", "--normalize", "--json", "--per-row"],
        "kl broadcast": ["kl", p, "0.2,0.2,0.2,0.2,0.2", "--json", "--per-row"],
        "kl check pass": ["kl", p, q, "--check", "p99<1", "--check", "kl.mean>=0", "--json"],
        "kl check fail": ["kl", p, q, "--check", "value<0.0001", "--json"],
        "kl check table": ["kl", p, q, "--check", "value<0.0001"],
        "kl bench": ["kl", b["p"], b["q"], "--logits", "--json", "--per-row"],
        "kl bench threads 1": ["kl", b["p"], b["q"], "--logits", "--threads", "1", "--json"],
        "kl bench fast": ["kl", b["p"], b["q"], "--logits", "--precision", "fast", "--json", "--per-row"],
        "kl bench float16": ["kl", b["p16"], b["q16"], "--logits", "--json", "--per-row"],
        "kl bench float16 fast": ["kl", b["p16"], b["q16"], "--logits", "--precision", "fast", "--json"],
        "kl bench parquet": ["kl", b["p_parquet"], b["q_parquet"], "--logits", "--json", "--per-row"],
        "kl bench csv": ["kl", b["p_csv"], b["q_csv"], "--logits", "--json", "--per-row"],
        "kl bench logprobs p": ["kl", b["p"], b["q"], "--p-kind", "logits", "--q-kind", "logits", "--bits", "-q"],
        "xent csv": ["xent", p, q, "--json", "--per-row"],
        "xent csv bits": ["xent", p, q, "--bits", "--json"],
        "xent table": ["xent", p, q],
        "xent logits": ["xent", teacher, student, "--logits", "--json", "--per-row"],
        "xent labels": ["xent", lm, "--labels", ids, "--json", "--per-row"],
        "xent labels smoothing": ["xent", lm, "--labels", ids, "--label-smoothing", "0.1", "--json"],
        "xent labels shift bits": ["xent", lm, "--labels", ids, "--shift", "--bits", "--json", "--per-row"],
        "xent bench labels fast": ["xent", b["p"], "--labels", b["labels"], "--precision", "fast", "--json"],
        "js csv": ["js", p, q, "--json", "--per-row"],
        "js bits -q": ["js", "1,0", "0,1", "--bits", "-q"],
        "js weights": ["js", p, q, "--weights", "0.3,0.7", "--base", "10", "--json", "--per-row"],
        "js parquet csv": ["js", f"{s}p.parquet", f"{s}q.parquet", "--per-row", "--format", "csv"],
        "js logits": ["js", teacher, student, "--logits", "--json", "--per-row"],
        "js table": ["js", teacher, student, "--logits"],
        "js bench": ["js", b["p"], b["q"], "--logits", "--json", "--per-row"],
        "perplexity lm": ["perplexity", lm, "--labels", ids, "--json", "--per-row"],
        "perplexity lm table": ["perplexity", lm, "--labels", ids, "--per-row"],
        "perplexity lm bits shift": ["perplexity", lm, "--labels", ids, "--shift", "--bits", "--json", "--per-row"],
        "perplexity lm temperature": ["perplexity", lm, "--labels", ids, "-T", "1.5", "--json"],
        "perplexity lm fast": ["perplexity", lm, "--labels", ids, "--precision", "fast", "--json"],
        "perplexity logprobs group": ["perplexity", f"{s}token_logprobs.csv:logprob", "--kind", "logprobs",
                                      "--group", "doc", "--json", "--per-row"],
        "perplexity logprobs csv format": ["perplexity", f"{s}token_logprobs.csv:logprob", "--kind", "logprobs",
                                           "--group", "doc", "--format", "csv"],
        "perplexity logprobs padded": ["perplexity", f"{s}rlhf.npz:policy", "--kind", "logprobs", "--json",
                                       "--per-row"],
        "perplexity bench": ["perplexity", b["p"], "--labels", b["labels"], "--json"],
        "perplexity bench ignored": ["perplexity", b["p"], "--labels", b["labels_ignored"], "--json", "--per-row"],
        "perplexity bench 3d": ["perplexity", b["p3d"], "--labels", b["labels2d"], "--json", "--per-row"],
        "perplexity bench 3d shift": ["perplexity", b["p3d"], "--labels", b["labels2d"], "--shift", "--json",
                                      "--per-row"],
        "perplexity bench fast": ["perplexity", b["p"], "--labels", b["labels"], "--precision", "fast", "-q"],
        "compare samples": ["compare", teacher, student, "--json", "--per-row"],
        "compare samples table": ["compare", teacher, student],
        "compare samples bits": ["compare", teacher, student, "--bits", "--top-k", "3", "--worst", "4", "--json"],
        "compare probs": ["compare", p, q, "--kind", "probs", "--json", "--per-row"],
        "compare bench": ["compare", b["p"], b["q"], "--json", "--per-row"],
        "compare bench labels": ["compare", b["p"], b["q"], "--labels", b["labels"], "--json", "--per-row"],
        "compare bench labels ignored": ["compare", b["p"], b["q"], "--labels", b["labels_ignored"], "--json",
                                         "--per-row"],
        "compare bench labels bits": ["compare", b["p"], b["q"], "--labels", b["labels"], "--bits", "--json"],
        "compare bench labels table": ["compare", b["p"], b["q"], "--labels", b["labels"], "--worst", "3"],
        "compare bench float16 ndjson": ["compare", b["p16"], b["q16"], "--format", "ndjson"],
        "compare bench checks": ["compare", b["p"], b["q"], "--labels", b["labels"], "--check", "kl.p99<0.2",
                                 "--check", "top1_agreement>=0.98", "--json"],
        "rlhf": ["rlhf", policy, ref, "--json", "--per-row"],
        "rlhf table": ["rlhf", policy, ref],
        "rlhf reward": ["rlhf", policy, ref, "--reward", f"{s}rlhf.npz:reward", "--json", "--per-row"],
        "rlhf reward number k1": ["rlhf", policy, ref, "--reward", "1.5", "--estimator", "k1", "--beta", "0.05",
                                  "--json"],
        "rlhf exact": ["rlhf", policy, ref, "--policy-logits", f"{s}rlhf.npz:policy_logits", "--ref-logits",
                       f"{s}rlhf.npz:ref_logits", "--json", "--per-row"],
        "rlhf from logits": ["rlhf", "--policy-logits", f"{s}rlhf.npz:policy_logits", "--ref-logits",
                             f"{s}rlhf.npz:ref_logits", "--labels", f"{s}rlhf.npz:tokens", "--json", "--per-row"],
        "rlhf csv": ["rlhf", policy, ref, "--format", "csv"],
        "rlhf bits k2": ["rlhf", policy, ref, "--estimator", "k2", "--bits", "--json", "--per-row"],
        "gaussian numbers": ["gaussian", "--mu1", "0", "--sigma1", "1", "--mu2", "1", "--sigma2", "2", "-q"],
        "gaussian numbers json": ["gaussian", "--mu1", "0", "--sigma1", "1", "--mu2", "1", "--sigma2", "2", "--json"],
        "gaussian table file": ["gaussian", f"{s}gaussians.csv", "--per-row", "--json"],
        "gaussian table file both": ["gaussian", f"{s}gaussians.csv", "--direction", "both", "--bits", "--json",
                                     "--per-row"],
        "gaussian table file table": ["gaussian", f"{s}gaussians.csv", "--per-row"],
        "gaussian diagonal": ["gaussian", "--mu1", "0,1", "--var1", "1,2", "--mu2", "1,0", "--logvar2", "0,0.5",
                              "--json"],
        "gaussian full": ["gaussian", "--mu1", "0,0,0", "--cov1", f"{s}cov1.npy", "--mu2", "1,0,0", "--cov2",
                          f"{s}cov2.npy", "--json"],
        "gaussian mixed": ["gaussian", "--mu1", "0,0,0", "--cov1", f"{s}cov1.npy", "--sigma2", "1,2,1", "--json",
                           "--direction", "reverse"],
        "gaussian vae": ["gaussian", "--vae", "--mu", f"{s}vae.npz:mu", "--logvar", f"{s}vae.npz:logvar", "--json",
                         "--per-row"],
        "gaussian vae ndjson": ["gaussian", "--vae", "--mu", f"{s}vae.npz:mu", "--logvar", f"{s}vae.npz:logvar",
                                "--format", "ndjson"],
        "error probabilities": ["kl", "0.5,0.6", "0.5,0.5"],
        "error shapes": ["kl", p, "0.5,0.5"],
        "error rows": ["kl", p, f"{s}counts.csv", "--normalize"],
        "error label count": ["compare", teacher, student, "--labels", b["labels"]],
        "error usage": ["kl", p, q, "--json", "--format", "csv"],
        "error missing": ["kl", f"{s}nothing.npy", q],
    }


def fmt_of(argv: list[str]) -> str:
    if "-q" in argv:
        return "quiet"
    if "--json" in argv:
        return "json"
    if "--format" in argv:
        return argv[argv.index("--format") + 1]
    return "table"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``klcli ARGV`` in this process, at a pinned width without colour: (exit code, stdout, stderr)."""
    from klcli.cli import main

    saved = {name: os.environ.get(name) for name in ("COLUMNS", "NO_COLOR", "KLCLI_DEBUG")}
    os.environ["COLUMNS"], os.environ["NO_COLOR"] = "100", "1"
    os.environ.pop("KLCLI_DEBUG", None)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, out.getvalue(), err.getvalue()


def prepare(folder: Path) -> dict[str, str]:
    """Make ``bench/`` data and a ``samples`` link in ``folder``; the bench operands, relative to ``folder``."""
    (folder / "bench").mkdir()
    make_bench(folder / "bench")
    (folder / "samples").symlink_to(ROOT / "sample_data")
    return {name: os.path.relpath(path, folder) for name, path in make_bench_names(folder / "bench").items()}


def run_case(folder: Path, argv: list[str]) -> dict:
    """One case, run in ``folder`` with relative operands (so outputs and tables' widths match in any checkout)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        code, out, err = run_cli(argv)
    finally:
        os.chdir(here)
    return {"argv": argv, "format": fmt_of(argv), "code": code, "out": out, "err": err}


def outputs(folder: Path) -> dict[str, dict]:
    """Every case's output, run in ``folder`` (see :func:`prepare`)."""
    bench = prepare(folder)
    return {name: run_case(folder, argv) for name, argv in cases("samples", bench).items()}


def main() -> None:
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        found = outputs(Path(folder))
    GOLDEN.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(found)} outputs to {GOLDEN}")


if __name__ == "__main__":
    main()
