"""Regenerate the files in sample_data/ (deterministic): python sample_data/make_samples.py

The same small distributions are written in every format klcli reads, so the
README's examples and the tests can show that the format does not change the
figures.
"""

from __future__ import annotations

import json
import math
import struct
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

    write_model_formats()
    write_shards()
    write_reference_sample()


def write_safetensors(path: Path, float32: dict[str, np.ndarray], bfloat16: dict[str, np.ndarray]) -> None:
    """A safetensors file (8-byte header length, JSON header, data) without the safetensors package;
    bfloat16 tensors are float32 values rounded to nearest even on their upper 16 bits."""
    header, chunks, offset = {}, [], 0
    tensors = [(n, "F32", a.astype("<f4").tobytes(), a.shape) for n, a in float32.items()]
    for name, values in bfloat16.items():
        bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        tensors.append((name, "BF16", rounded.tobytes(), values.shape))
    for name, dtype, data, shape in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def write_llama_base(path: Path, logits: np.ndarray, tokens: np.ndarray) -> None:
    """A llama.cpp KL-divergence base file, as llama-perplexity --kl-divergence-base writes it: the magic, n_ctx,
    n_vocab, n_chunk, every chunk's tokens, then per scored row the scale and min log-prob (two float32) and
    the logits quantised to 16 bits over the 16 nats below the top (rows padded to an even vocabulary)."""
    n_chunk, rows, n_vocab = logits.shape
    n_ctx = tokens.shape[1]
    out = [b"_logits_", struct.pack("<iii", n_ctx, n_vocab, n_chunk), tokens.astype("<i4").tobytes()]
    words = 2 * ((n_vocab + 1) // 2) + 4
    for z in logits.reshape(-1, n_vocab).astype(np.float64):
        top = float(z.max())
        low = max(float(z.min()), top - 16)
        scale = (top - low) / 65535
        min_log_prob = low - top - math.log(np.sum(np.exp(z - top)))
        row = np.zeros(words, dtype="<u2")
        row[:4] = np.frombuffer(struct.pack("<ff", scale, min_log_prob), dtype="<u2")
        row[4 : 4 + n_vocab] = np.where(z > low, np.round((z - low) / scale), 0)
        out.append(row.tobytes())
    path.write_bytes(b"".join(out))


def chat_completion(positions: list[list[tuple[str, float]]], sampled: list[int]) -> dict:
    """An OpenAI chat completion with logprobs: each position's top tokens (token, log-prob) and the sampled one."""
    content = []
    for top, pick in zip(positions, sampled):
        token, logprob = top[pick]
        content.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]})
    text = "".join(item["token"] for item in content)
    return {"id": "chatcmpl-sample", "object": "chat.completion", "model": "sample",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": {"content": content, "refusal": None}, "finish_reason": "stop"}]}


def write_model_formats() -> None:
    # safetensors: the teacher's logits in float32 and the student's in bfloat16, as a training run saves them.
    teacher = np.load(HERE / "teacher_logits.npy")
    student = np.load(HERE / "student_logits.npy")
    write_safetensors(HERE / "models.safetensors", {"teacher": teacher}, {"student": student})

    # llama.cpp: a base file of 2 chunks of 16 tokens over a 50-token vocabulary (7 scored rows per chunk),
    # and another runtime's float32 logits for the same rows, to compare against it.
    rng = np.random.default_rng(13)
    n_chunk, n_ctx, n_vocab = 2, 16, 50
    rows = n_ctx - 1 - n_ctx // 2
    base = rng.normal(0.0, 2.5, size=(n_chunk, rows, n_vocab))
    tokens = rng.integers(0, n_vocab, size=(n_chunk, n_ctx))
    for chunk in range(n_chunk):  # the scored tokens (row j predicts token n_ctx/2 + 1 + j) drawn from the model
        for j in range(rows):
            p = np.exp(base[chunk, j] - base[chunk, j].max())
            tokens[chunk, n_ctx // 2 + 1 + j] = rng.choice(n_vocab, p=p / p.sum())
    write_llama_base(HERE / "base.kld", base, tokens)
    ported = base.reshape(-1, n_vocab) + rng.normal(0.0, 0.2, size=(n_chunk * rows, n_vocab))
    np.save(HERE / "ported_logits.npy", ported.astype(np.float32))

    # OpenAI-style logprobs: a reference model's chat completion (one JSON document) and a candidate's (JSONL,
    # one completion per line), top 5 tokens at each of 8 positions, over the same words.
    words = ["The", " cat", " sat", " on", " the", " mat", " a", " dog", " ran", " to", ".", "!"]
    reference, candidate, picks = [], [], []
    for _ in range(8):
        scores = rng.normal(0.0, 1.5, size=len(words))
        for side, noise in ((reference, 0.0), (candidate, 0.4)):
            z = scores + rng.normal(0.0, noise, size=len(words))
            logp = z - z.max() - math.log(np.sum(np.exp(z - z.max())))
            top = np.argsort(-logp, kind="stable")[:5]
            side.append([(words[i], round(float(logp[i]), 6)) for i in top])
        picks.append(0)
    (HERE / "reference.json").write_text(json.dumps(chat_completion(reference, picks), indent=1) + "\n")
    lines = [chat_completion(candidate[:4], picks[:4]), chat_completion(candidate[4:], picks[4:])]
    (HERE / "candidate.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_shards() -> None:
    """The teacher's logits cut into three uneven shards (10, 1 and 53 rows), for the sharded-input examples."""
    teacher = np.load(HERE / "teacher_logits.npy")
    folder = HERE / "teacher_shards"
    folder.mkdir(exist_ok=True)
    for index, piece in enumerate(np.split(teacher, [10, 11])):
        np.save(folder / f"part-{index}.npy", piece)


def write_reference_sample() -> None:
    """A top-K reference of the teacher's logits (klcli reference … --top-k 16), named relative to the project."""
    import os

    from klcli.commands.reference import write_reference

    here = os.getcwd()
    os.chdir(HERE.parent)
    try:
        write_reference("sample_data/teacher_logits.npy", "sample_data/teacher.ref.safetensors", top_k=16)
    finally:
        os.chdir(here)


if __name__ == "__main__":
    main()
