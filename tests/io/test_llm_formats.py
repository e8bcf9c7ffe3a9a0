"""safetensors and llama.cpp KL-divergence base files, written here from known arrays."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from klcli.io.llama import layout
from klcli.io.operand import open_operand

special = pytest.importorskip("scipy.special")


# --- a small safetensors writer (the format: u64 header length, JSON header, data) ----------------

CODES = {np.float64: "F64", np.float32: "F32", np.float16: "F16", np.int64: "I64"}


def write_safetensors(path, tensors: dict, bf16: dict | None = None, header_patch=None):
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": CODES[array.dtype.type], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    for name, bits in (bf16 or {}).items():
        data = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    if header_patch:
        header_patch(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return str(path)


def _rows(source):
    return np.concatenate(list(source.blocks(3)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_safetensors_dtypes(tmp_path, dtype):
    values = np.random.default_rng(1).normal(size=(2, 5, 7)).astype(dtype)
    path = write_safetensors(tmp_path / "t.safetensors", {"logits": values})
    source = open_operand(path)
    assert source.shape == (2, 5, 7)
    np.testing.assert_array_equal(_rows(source), values.reshape(10, 7))


def test_bf16_widens_exactly(tmp_path):
    floats = np.array([[1.0, -2.5, 3.140625, 1e-3], [0.0, 65280.0, -0.015625, 100.0]], dtype=np.float32)
    bits = (floats.view(np.uint32) >> 16).astype(np.uint16)  # truncation: these values are exact in bf16
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    path = write_safetensors(tmp_path / "b.safetensors", {"other": np.zeros(2)}, bf16={"logits": bits})
    got = _rows(open_operand(f"{path}:logits"))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[0, :3], floats[0, :3])


def test_safetensors_cli_matches_npy(cli, tmp_path):
    rng = np.random.default_rng(2)
    p, q = rng.normal(size=(20, 9)).astype(np.float32), rng.normal(size=(20, 9)).astype(np.float32)
    path = write_safetensors(tmp_path / "both.safetensors", {"p": p, "q": q})
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    via_st = cli("kl", f"{path}:p", f"{path}:q", "--logits", "-q").out
    assert via_st == cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "-q").out


@pytest.mark.parametrize(("patch", "message"), [
    (lambda h: h["x"].update(data_offsets=[0, 10_000]), "tensor 'x' claims bytes [0, 10000) but the data holds 32"),
    (lambda h: h["x"].update(shape=[9]), "tensor 'x' has shape [9] of F64 (72 bytes) but its offsets span 32 bytes"),
    (lambda h: h["x"].update(dtype="C64"), "tensor 'x' has dtype C64; klcli reads"),
])
def test_corrupt_safetensors(cli, tmp_path, patch, message):
    path = write_safetensors(tmp_path / "c.safetensors", {"x": np.full(4, 0.25)}, header_patch=patch)
    run = cli("kl", path, "0.25,0.25,0.25,0.25")
    assert run.code == 2 and message in run.err and len(run.err.splitlines()) == 1


def test_safetensors_selector_errors(cli, tmp_path):
    path = write_safetensors(tmp_path / "two.safetensors", {"a": np.full(2, 0.5), "b": np.full(2, 0.5)})
    run = cli("kl", path, "0.5,0.5")
    assert run.err == f"klcli: error: {path}: holds 2 tensors (a, b); name one as {path}:TENSOR\n"
    run = cli("kl", f"{path}:zz", "0.5,0.5")
    assert run.err == f"klcli: error: {path}: has no tensor 'zz'; it holds: a, b\n"
    (tmp_path / "garbage.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    run = cli("kl", tmp_path / "garbage.safetensors", "1")
    assert run.code == 2 and "its header is not JSON" in run.err


# --- llama.cpp KL-divergence base files ----------------------------------------------------------

def quantise_row(z: np.ndarray) -> tuple[float, float, np.ndarray]:
    """llama.cpp's quantisation of one row of logits (as its issue describes it)."""
    max_logit = float(z.max())
    min_logit = max(float(z.min()), max_logit - 16)
    scale = (max_logit - min_logit) / 65535
    log_sum = math.log(np.sum(np.exp(z.astype(np.float64) - max_logit)))
    min_log_prob = min_logit - max_logit - log_sum
    codes = np.where(z > min_logit, np.round((z - min_logit) / scale), 0).astype(np.uint16)
    return scale, min_log_prob, codes


def write_llama_base(path, logits: np.ndarray, tokens: np.ndarray, n_ctx: int) -> np.ndarray:
    """logits: (n_chunk, rows_per_chunk, n_vocab); tokens: (n_chunk, n_ctx). Returns the decoded log-probs."""
    n_chunk, rows_per_chunk, n_vocab = logits.shape
    assert rows_per_chunk == layout(n_ctx, n_vocab, n_chunk)[0]
    words = layout(n_ctx, n_vocab, n_chunk)[1]
    out = [b"_logits_", struct.pack("<iii", n_ctx, n_vocab, n_chunk), tokens.astype("<i4").tobytes()]
    decoded = np.empty(logits.shape)
    for c in range(n_chunk):
        for j in range(rows_per_chunk):
            scale, min_log_prob, codes = quantise_row(logits[c, j])
            row = np.zeros(words, dtype="<u2")
            row[:4] = np.frombuffer(struct.pack("<ff", scale, min_log_prob), dtype="<u2")
            row[4 : 4 + n_vocab] = codes
            out.append(row.tobytes())
            decoded[c, j] = np.float32(min_log_prob) + np.float32(scale) * codes.astype(np.float64)
    path.write_bytes(b"".join(out))
    return decoded


@pytest.fixture
def llama_file(tmp_path):
    rng = np.random.default_rng(9)
    n_ctx, n_vocab, n_chunk = 16, 33, 2
    rows = n_ctx - 1 - n_ctx // 2
    logits = rng.normal(0, 3, size=(n_chunk, rows, n_vocab))
    tokens = rng.integers(0, n_vocab, size=(n_chunk, n_ctx))
    path = tmp_path / "base.kld"  # recognised by its magic, whatever it is called
    write_llama_base(path, logits, tokens, n_ctx)
    return path, logits, tokens, n_ctx


def test_llama_decodes_within_half_a_step(llama_file):
    path, logits, tokens, n_ctx = llama_file
    source = open_operand(str(path))
    decoded = _rows(source)
    truth = special.log_softmax(logits.reshape(-1, logits.shape[-1]), axis=1)
    top = truth.max(axis=1, keepdims=True)
    kept = truth > top - 16  # below 16 nats under the top, llama.cpp keeps one code only
    steps = np.array([quantise_row(row)[0] for row in logits.reshape(-1, logits.shape[-1])])[:, None]
    assert np.all(np.abs(decoded - truth)[kept] <= np.broadcast_to(steps, truth.shape)[kept] / 2 + 1e-6)
    labels = np.concatenate(list(source.labels(100)))[:, 0]
    first = n_ctx // 2 + 1
    np.testing.assert_array_equal(labels, tokens[:, first : first + logits.shape[1]].reshape(-1))


def _llama_kld(decoded_base: np.ndarray, test_logits: np.ndarray) -> np.ndarray:
    """llama-perplexity --kl-divergence's sum, written out: base log-probs as decoded, entries at or
    below −16 nats skipped, the test model's log-softmax in full."""
    log_test = special.log_softmax(test_logits.astype(np.float64), axis=1)
    keep = decoded_base > -16
    return np.sum(np.where(keep, np.exp(decoded_base) * (decoded_base - log_test), 0.0), axis=1)


def test_llama_perplexity_and_compare_match_llama_cpp(cli, llama_file, tmp_path):
    path, logits, tokens, n_ctx = llama_file
    flat = logits.reshape(-1, logits.shape[-1])
    first = n_ctx // 2 + 1
    labels = tokens[:, first : first + logits.shape[1]].reshape(-1)
    decoded = np.concatenate(list(open_operand(str(path)).blocks(100)))
    nll_base = -decoded[np.arange(len(labels)), labels]
    doc = cli("perplexity", path, "--json").json()
    assert doc["tokens"] == len(labels)
    assert doc["value"] == pytest.approx(math.exp(nll_base.mean()), rel=1e-12)
    truth = -special.log_softmax(flat, axis=1)[np.arange(len(labels)), labels]
    assert doc["value"] == pytest.approx(math.exp(truth.mean()), rel=1e-3)  # within the quantisation
    test = (flat + np.random.default_rng(1).normal(0, 0.3, size=flat.shape)).astype(np.float32)
    np.save(tmp_path / "test.npy", test)
    compared = cli("compare", path, tmp_path / "test.npy", "--json", "--per-row").json()
    expected = _llama_kld(decoded, test)
    np.testing.assert_allclose(compared["per_row"]["kl"], expected, rtol=1e-9, atol=1e-14)
    assert compared["value"] == pytest.approx(expected.mean(), rel=1e-9)
    assert compared["tokens"] == len(labels)
    assert compared["ppl_base"] == pytest.approx(math.exp(nll_base.mean()), rel=1e-12)
    log_test = special.log_softmax(test.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
    delta_p = np.exp(log_test) - np.exp(-nll_base)
    assert compared["delta_p"]["mean"] == pytest.approx(delta_p.mean(), rel=1e-9)
    same_top = np.argmax(decoded, axis=1) == np.argmax(test, axis=1)
    assert compared["top1_agreement"] == pytest.approx(same_top.mean(), rel=1e-12)


def test_llama_statistics_with_llama_cpps_formulas(cli, llama_file, tmp_path):
    """PPL ± stderr, ΔPPL ± stderr (with the covariance), RMS Δp ± stderr and "Same top p" ± stderr, each as
    perplexity.cpp's kl_divergence() forms it from its running sums (count > 10, as there)."""
    path, logits, tokens, n_ctx = llama_file
    flat = logits.reshape(-1, logits.shape[-1])
    first = n_ctx // 2 + 1
    labels = tokens[:, first : first + logits.shape[1]].reshape(-1)
    decoded = np.concatenate(list(open_operand(str(path)).blocks(100)))
    test = (flat + np.random.default_rng(2).normal(0, 0.3, size=flat.shape)).astype(np.float32)
    np.save(tmp_path / "test.npy", test)
    doc = cli("compare", path, tmp_path / "test.npy", "--json").json()
    n = len(labels)
    assert n > 10
    nll = -special.log_softmax(test.astype(np.float64), axis=1)[np.arange(n), labels]  # PPL(Q)
    nll_base = -decoded[np.arange(n), labels]

    def mean_and_uncertainty(total, total2):
        mean = total / n
        return mean, math.sqrt((total2 / n - mean * mean) / (n - 1))

    log_ppl = mean_and_uncertainty(nll.sum(), (nll * nll).sum())
    log_ppl_base = mean_and_uncertainty(nll_base.sum(), (nll_base * nll_base).sum())
    cov = ((nll * nll_base).sum() / n - (nll.sum() / n) * (nll_base.sum() / n)) / (n - 1)
    ppl, ppl_base = math.exp(log_ppl[0]), math.exp(log_ppl_base[0])
    ppl_unc, ppl_base_unc = ppl * log_ppl[1], ppl_base * log_ppl_base[1]
    assert doc["ppl_test"] == pytest.approx(ppl, rel=1e-9)
    assert doc["ppl_test_stderr"] == pytest.approx(ppl_unc, rel=1e-9)
    assert doc["ppl_base"] == pytest.approx(ppl_base, rel=1e-9)
    assert doc["ppl_base_stderr"] == pytest.approx(ppl_base_unc, rel=1e-9)
    assert doc["delta_ppl"] == pytest.approx(ppl - ppl_base, rel=1e-9)
    assert doc["delta_ppl_stderr"] == pytest.approx(
        math.sqrt(ppl_unc**2 + ppl_base_unc**2 - 2.0 * ppl * ppl_base * cov), rel=1e-9)
    assert doc["ln_ppl_ratio_stderr"] == pytest.approx(math.sqrt(log_ppl[1] ** 2 + log_ppl_base[1] ** 2 - 2 * cov),
                                                       rel=1e-9)
    p_diff = np.exp(-nll) - np.exp(-nll_base)
    mse = mean_and_uncertainty((p_diff**2).sum(), (p_diff**4).sum())
    assert doc["delta_p"]["rms"] == pytest.approx(math.sqrt(mse[0]), rel=1e-9)
    assert doc["delta_p"]["rms_stderr"] == pytest.approx(0.5 / math.sqrt(mse[0]) * mse[1], rel=1e-9)
    same_top = (np.argmax(decoded, axis=1) == np.argmax(test, axis=1)).mean()
    assert doc["top1_agreement"] == pytest.approx(same_top, rel=1e-12)
    assert doc["top1_agreement_stderr"] == pytest.approx(math.sqrt(same_top * (1 - same_top) / (n - 1)), rel=1e-12)


def test_llama_truncated_and_wrong_magic(cli, llama_file, tmp_path):
    path = llama_file[0]
    data = path.read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-10])
    run = cli("perplexity", tmp_path / "short.bin")
    assert run.code == 2
    expected = layout(16, 33, 2)[2]
    assert run.err == (f"klcli: error: {tmp_path / 'short.bin'}: a llama.cpp base file with n_ctx=16, n_vocab=33, "
                       f"n_chunk=2 has {expected} bytes, but this one has {expected - 10}\n")
    (tmp_path / "magic.bin").write_bytes(b"_logitz_" + data[8:])
    run = cli("perplexity", tmp_path / "magic.bin")
    assert run.code == 2 and "unknown file type '.bin'" in run.err
    (tmp_path / "tiny.kld").write_bytes(b"_logits_\x01")
    run = cli("perplexity", tmp_path / "tiny.kld")
    assert run.code == 2 and "is not a llama.cpp KL-divergence base file" in run.err


@pytest.mark.parametrize("header", [(2048.0, 0.0), (float("nan"), -20.0), (1e-4, float("inf"))])
def test_llama_damaged_row_header_is_named(cli, llama_file, tmp_path, header):
    path, logits, tokens, n_ctx = llama_file
    n_chunk, rows_per_chunk, n_vocab = logits.shape
    words = layout(n_ctx, n_vocab, n_chunk)[1]
    data = bytearray(path.read_bytes())
    row_start = 20 + 4 * n_chunk * n_ctx + 2 * words * 3  # row 3
    data[row_start:row_start + 8] = struct.pack("<ff", *header)
    damaged = tmp_path / "damaged.kld"
    damaged.write_bytes(bytes(data))
    run = cli("perplexity", damaged)
    assert run.code == 2
    assert run.err.startswith(f"klcli: error: {damaged}: row 3 decodes to log-probabilities up to ")
    assert run.err.endswith("its scale and minimum are damaged\n")


def test_bfloat16_widening_is_exact_for_every_bit_pattern():
    """All 65,536 patterns: the float32 whose high half they are (NaN payloads, infinities, subnormals, −0)."""
    from klcli.io.safetensors import widen_bf16

    patterns = np.arange(65536, dtype=np.uint32)
    widened = widen_bf16(patterns.astype(np.uint16))
    assert widened.dtype == np.float32 and widened.shape == (65536,)
    np.testing.assert_array_equal(widened.view(np.uint32), patterns << 16)
    # The values, decoded independently in float64: sign · 2^(e − 127) · (1 + m/128), subnormals 2^−126 · m/128.
    sign = np.where(patterns >> 15, -1.0, 1.0)
    exponent, mantissa = ((patterns >> 7) & 0xFF).astype(np.int64), (patterns & 0x7F).astype(np.float64)
    expected = np.where(exponent == 0, sign * np.ldexp(mantissa / 128, -126),
                        sign * np.ldexp(1 + mantissa / 128, exponent - 127))
    special = exponent == 0xFF
    expected[special] = np.where(mantissa[special] == 0, sign[special] * np.inf, np.nan)
    with np.errstate(invalid="ignore"):  # (signalling NaNs cast to float64 raise the invalid flag)
        np.testing.assert_array_equal(widened.astype(np.float64), expected)
    assert np.signbit(widened[0x8000]) and widened[0x8000] == 0  # −0 keeps its sign
    # A block of rows (what the reader widens) keeps its shape.
    assert widen_bf16(patterns.astype(np.uint16).reshape(256, 256)).shape == (256, 256)
