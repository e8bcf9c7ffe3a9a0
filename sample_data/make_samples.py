"""Regenerate the files in sample_data/ (deterministic): python sample_data/make_samples.py

The same small distributions are written in every format klcli reads, so the
README's examples and the tests can show that the format does not change the
figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def distributions(seed: int, rows: int = 8, outcomes: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(outcomes, 2.0), size=rows)


def write_csv(path: Path, values: np.ndarray, delimiter: str = ",") -> None:
    header = delimiter.join(f"o{i}" for i in range(values.shape[1]))
    lines = [delimiter.join(repr(float(v)) for v in row) for row in values]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")


def main() -> None:
    p, q = distributions(1), distributions(2)
    for name, values in (("p", p), ("q", q)):
        write_csv(HERE / f"{name}.csv", values)
        write_csv(HERE / f"{name}.tsv", values, "\t")
        np.save(HERE / f"{name}.npy", values)
        list_column = pa.array(values.tolist(), type=pa.list_(pa.float64()))
        pq.write_table(pa.table({"probs": list_column}), HERE / f"{name}.parquet")
        feather.write_feather(pa.table({f"o{i}": values[:, i] for i in range(values.shape[1])}),
                              HERE / f"{name}.feather")
    np.savez(HERE / "pq.npz", p=p, q=q)

    # Word counts of two small corpora over the same five words: --normalize turns them into distributions.
    counts = np.array([[40, 25, 20, 10, 5], [10, 20, 30, 25, 15]])
    (HERE / "counts.csv").write_text("the,cat,sat,on,mat\n" + "\n".join(",".join(map(str, r)) for r in counts) + "\n")

    # A teacher and a student model's logits over a 100-token vocabulary at 64 positions.
    rng = np.random.default_rng(7)
    teacher = rng.normal(0.0, 2.0, size=(64, 100))
    student = teacher + rng.normal(0.0, 0.3, size=teacher.shape)
    np.save(HERE / "teacher_logits.npy", teacher.astype(np.float32))
    np.save(HERE / "student_logits.npy", student.astype(np.float32))

    # A small language model's logits (3 sequences × 16 positions × 50-token vocabulary) and the tokens
    # observed at those positions, drawn from the model itself; and the same tokens' log-probabilities as
    # a table with a document column, so both perplexity routes give the same figure.
    rng = np.random.default_rng(3)
    lm_logits = rng.normal(0.0, 2.5, size=(3, 16, 50)).astype(np.float32)
    z = lm_logits.astype(np.float64)
    log_probs = z - z.max(axis=-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
    labels = np.array([[rng.choice(50, p=np.exp(row)) for row in sequence] for sequence in log_probs])
    np.save(HERE / "lm_logits.npy", lm_logits)
    np.save(HERE / "lm_labels.npy", labels.astype(np.int64))
    picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    lines = ["doc,position,token,logprob"] + [
        f"{'abc'[b]},{t},{labels[b, t]},{float(picked[b, t])!r}" for b in range(3) for t in range(16)]
    (HERE / "token_logprobs.csv").write_text("\n".join(lines) + "\n")

    # Gaussians: a table of univariate pairs, a VAE encoder's outputs, and two full covariances.
    rows = [(0.0, 1.0, 1.0, 2.0), (0.5, 1.0, 0.0, 1.0), (-1.0, 0.5, 1.0, 1.5), (2.0, 3.0, 2.0, 3.0)]
    (HERE / "gaussians.csv").write_text("mu1,sigma1,mu2,sigma2\n" + "\n".join(",".join(map(repr, r)) for r in rows)
                                        + "\n")
    rng = np.random.default_rng(5)
    np.savez(HERE / "vae.npz", mu=rng.normal(0.0, 0.8, size=(32, 8)), logvar=rng.normal(-0.5, 0.4, size=(32, 8)))
    np.save(HERE / "cov1.npy", np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]]))
    np.save(HERE / "cov2.npy", np.array([[1.0, 0.0, 0.1], [0.0, 1.5, 0.0], [0.1, 0.0, 1.0]]))

    # RLHF: 6 sequences of up to 12 sampled tokens (NaN-padded), their log-probabilities under a policy and
    # a reference model (both given as logits over a 20-token vocabulary too), and one reward per sequence.
    rng = np.random.default_rng(11)
    ref_logits = rng.normal(0.0, 2.0, size=(6, 12, 20))
    policy_logits = ref_logits + rng.normal(0.0, 0.4, size=ref_logits.shape)

    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_pi, log_ref = log_softmax(policy_logits), log_softmax(ref_logits)
    tokens = np.array([[rng.choice(20, p=np.exp(row)) for row in sequence] for sequence in log_pi])
    policy = np.take_along_axis(log_pi, tokens[..., None], axis=-1)[..., 0]
    ref = np.take_along_axis(log_ref, tokens[..., None], axis=-1)[..., 0]
    lengths = [12, 9, 12, 5, 10, 12]
    for row, length in enumerate(lengths):
        policy[row, length:] = ref[row, length:] = np.nan
        tokens[row, length:] = -100
    np.savez(HERE / "rlhf.npz", policy=policy, ref=ref, reward=rng.normal(1.0, 0.5, size=6),
             policy_logits=policy_logits, ref_logits=ref_logits, tokens=tokens)


if __name__ == "__main__":
    main()
