"""PyTorch's softmax and log_softmax reproduced in NumPy, rounding for rounding, for tests without torch.

torch's CPU kernel (aten/src/ATen/native/cpu/SoftMaxKernel.cpp) works in float32 for float32, float16
and bfloat16 tensors: it shifts by the row maximum, exponentiates, sums the exponentials in the 8
lanes of an AVX2 vector (each lane a sequential float32 sum), multiplies by the float32 reciprocal of
the sum, and rounds the result to the tensor's dtype. log_softmax subtracts log of the sum from the
shifted values; for float16 and bfloat16 the sum is rounded to the tensor's dtype before its logarithm,
as torch 2.13 does (its bfloat16 log-probabilities of a confident row miss 1 by up to ~4e-3 because of it).
"""

from __future__ import annotations

import numpy as np

LANES = 8


def round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest, ties to even on the upper 16 bits), as float32."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` ('float32', 'float16' or 'bfloat16'), held as float32 (float16 as is)."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "bfloat16":
        return round_bf16(values)
    if dtype == "float16":
        return values.astype(np.float16)
    return values


def lane_sum(values: np.ndarray) -> np.ndarray:
    """Row sums in float32 as an 8-lane vector loop makes them: sequential per lane, then the lanes."""
    rows, width = values.shape
    padded = np.zeros((rows, -(-width // LANES) * LANES), dtype=np.float32)
    padded[:, :width] = values
    lanes = np.cumsum(padded.reshape(rows, -1, LANES), axis=1, dtype=np.float32)[:, -1, :]
    total = lanes[:, 0].copy()
    for lane in range(1, LANES):
        total = (total + lanes[:, lane]).astype(np.float32)
    return total


def _shifted(logits: np.ndarray, dtype: str) -> np.ndarray:
    inputs = round_to(np.asarray(logits, dtype=np.float32), dtype).astype(np.float32)
    return (inputs - inputs.max(axis=1, keepdims=True)).astype(np.float32)


def softmax(logits: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """torch.softmax(torch.tensor(logits, dtype=dtype), -1), as stored (float16 as float16, bfloat16 as float32)."""
    shifted = _shifted(logits, dtype)
    weights = np.exp(shifted, dtype=np.float32)
    scale = (np.float32(1.0) / lane_sum(weights)).astype(np.float32)
    return round_to((weights * scale[:, None]).astype(np.float32), dtype)


def log_softmax(logits: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """torch.log_softmax(torch.tensor(logits, dtype=dtype), -1), as stored."""
    shifted = _shifted(logits, dtype)
    total = lane_sum(np.exp(shifted, dtype=np.float32))
    if dtype != "float32":
        total = round_to(total, dtype).astype(np.float32)
        shifted = round_to(shifted, dtype).astype(np.float32)
    return round_to((shifted - np.log(total, dtype=np.float32)[:, None]).astype(np.float32), dtype)


def realistic_logits(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    """Rows of the shapes language models produce: Gaussian of std 2 and 5, peaked and confident rows.

    A quarter each: N(0, 2); N(0, 5); N(0, 3) with one token raised by 10–40 (at a random position, or the
    first, which puts the top token at the start of its lane); and confident rows (top token holding
    ~0.9–0.9999 of the mass over an N(0, 1.5) tail), whose tail terms a float32 lane sum partly loses.
    """
    quarter = -(-rows // 4)
    z = np.concatenate([
        rng.normal(0, 2, (quarter, vocab)),
        rng.normal(0, 5, (quarter, vocab)),
        rng.normal(0, 3, (quarter, vocab)),
        rng.normal(0, 1.5, (quarter, vocab)),
    ])[:rows]
    peaked = np.arange(2 * quarter, min(3 * quarter, rows))
    top = np.where(peaked % 2 == 0, 0, rng.integers(0, vocab, peaked.size))
    z[peaked, top] += rng.uniform(10, 40, peaked.size)
    confident = np.arange(3 * quarter, rows)
    z[confident, rng.integers(0, vocab, confident.size)] = np.log(vocab) + rng.uniform(2, 9, confident.size)
    return z
