"""llama.cpp KL-divergence base files (``llama-perplexity --kl-divergence-base FILE``).

Layout, all little-endian: the magic ``_logits_``; int32 n_ctx, n_vocab,
n_chunk; int32 tokens[n_chunk·n_ctx]; then for each chunk n_ctx − 1 − n_ctx/2
rows of nv = 2·((n_vocab+1)/2) + 4 uint16 words: a float32 ``scale`` (words
0–1), a float32 ``min_log_prob`` (words 2–3), and n_vocab codes q with
log p = min_log_prob + scale·q. Row j of chunk c predicts token
tokens[c·n_ctx + n_ctx/2 + 1 + j].

llama.cpp quantises each row to 16 bits over the 16 nats below its top token:
every log-probability more than 16 nats below the top is stored as the one
lowest code, and the others are exact only to scale/2 ≈ 1.2e-4 nats. klcli
uses the decoded values exactly as llama-perplexity --kl-divergence does: not
renormalised, and with base entries at or below −16 nats left out of the KL
sum, so its figures for a base file are llama.cpp's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from klcli.errors import InputError
from klcli.io.source import Source

# How these files' values are read, as llama-perplexity --kl-divergence reads them: decoded log-probabilities
# used as stored (they sum to 1 only to the 16-bit quantisation), entries at or below −16 nats left out of the
# sums over the base side — so klcli's figures for a base file are llama.cpp's own.
LLAMA_KIND = "llama-logprobs"
LLAMA_CUTOFF = -16.0

MAGIC = b"_logits_"


def layout(n_ctx: int, n_vocab: int, n_chunk: int) -> tuple[int, int, int]:
    """(rows per chunk, uint16 words per row, expected file size in bytes).

    Examples
    --------
    >>> layout(512, 32000, 2)
    (255, 32004, 32648196)
    """
    rows_per_chunk = n_ctx - 1 - n_ctx // 2
    words = 2 * ((n_vocab + 1) // 2) + 4
    size = 20 + 4 * n_chunk * n_ctx + 2 * words * n_chunk * rows_per_chunk
    return rows_per_chunk, words, size


def decode_rows(words: np.ndarray, n_vocab: int) -> np.ndarray:
    """Rows of uint16 words as float64 log-probabilities min_log_prob + scale·q."""
    header = np.ascontiguousarray(words[:, :4]).view(np.float32)  # (rows, 2): scale, min_log_prob
    codes = words[:, 4 : 4 + n_vocab]
    return header[:, 1:2].astype(np.float64) + header[:, 0:1].astype(np.float64) * codes


# A row's top code decodes to −log Σ e^(z − max) ≤ 0; float32 scale and minimum round it by a few 1e-6.
_TOP_TOLERANCE = 1e-3


def _checked(values: np.ndarray, path: str, first_row: int) -> np.ndarray:
    """Decoded rows that are log-probabilities: finite and at most 0 (a damaged row header is neither)."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.max(values, axis=1) <= _TOP_TOLERANCE) | ~np.isfinite(np.min(values, axis=1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        top = float(np.max(values[row]))
        raise InputError(f"{path}: row {first_row + row} decodes to log-probabilities up to {top!r} (they must be "
                         "finite and at most 0); its scale and minimum are damaged")
    return values


def open_llama_base(path: str, operand: str) -> Source:
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(20)
    if len(head) < 20 or head[:8] != MAGIC:
        raise InputError(f"{path}: is not a llama.cpp KL-divergence base file (it needs the magic '_logits_' and "
                         "three int32 sizes)")
    n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(head[8:], dtype="<i4"))
    if n_ctx < 2 or n_vocab < 1 or n_chunk < 1:
        raise InputError(f"{path}: has n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk}; each must be positive "
                         "(n_ctx at least 2)")
    rows_per_chunk, words, expected = layout(n_ctx, n_vocab, n_chunk)
    if size != expected:
        raise InputError(f"{path}: a llama.cpp base file with n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk} "
                         f"has {expected} bytes, but this one has {size}")
    tokens = np.memmap(path, dtype="<i4", mode="r", offset=20, shape=(n_chunk, n_ctx))
    rows = np.memmap(path, dtype="<u2", mode="r", offset=20 + 4 * n_chunk * n_ctx,
                     shape=(n_chunk * rows_per_chunk, words))

    def blocks(block_rows: int) -> Iterator[np.ndarray]:
        for start in range(0, rows.shape[0], block_rows):
            yield _checked(decode_rows(rows[start : start + block_rows], n_vocab), path, start)

    def labels(block_rows: int) -> Iterator[np.ndarray]:
        first = n_ctx // 2 + 1
        yield np.asarray(tokens[:, first : first + rows_per_chunk], dtype=np.int64).reshape(-1, 1)

    source = Source(operand, path, "llama-kl-base", (n_chunk * rows_per_chunk, n_vocab), "quantized-uint16", blocks)
    source.forced_kind = LLAMA_KIND
    source.kernel_options = {"kind": "logprobs", "as_stored_below": LLAMA_CUTOFF}
    source.labels = labels
    return source
