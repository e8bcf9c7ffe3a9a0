"""The probability tolerance (SPEC §3): real softmax dumps pass, rows that are not rounding do not."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from klcli.core.logspace import UNIT_ROUNDOFF, as_log_rows, row_tolerance, sum_tolerance
from klcli.errors import DistributionError
from tests import torchlike

VOCABS = (32000, 128256)
DTYPES = ("float32", "float16", "bfloat16")
KINDS = (("probs", torchlike.softmax), ("logprobs", torchlike.log_softmax))


@functools.cache
def _logits(vocab: int, rows: int) -> np.ndarray:
    return torchlike.realistic_logits(np.random.default_rng(vocab), rows, vocab)


def _dump(vocab: int, dtype: str, kind: str, rows: int = 32) -> np.ndarray:
    return dict(KINDS)[kind](_logits(vocab, rows), dtype)


def _sums(values: np.ndarray, kind: str) -> np.ndarray:
    wide = np.asarray(values, dtype=np.float64)
    return np.exp(wide).sum(axis=1) if kind == "logprobs" else wide.sum(axis=1)


def test_the_reproduction_rounds_as_the_kernel_does():
    # The lane sum loses small terms added to a lane that already holds the top token: a confident row's
    # float32 probabilities sum above 1 by far more than a pairwise (NumPy) sum's rounding would give.
    dump = _dump(128256, "float32", "probs")
    assert np.max(np.abs(_sums(dump, "probs") - 1)) > 2e-5
    assert torchlike.round_bf16(np.float32([1.0, 1.00390625, 1.01171875, 3.14159])).tolist() == \
        [1.0, 1.0, 1.015625, 3.140625]  # ties to even, then to nearest


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_every_row_of_a_softmax_dump_passes(vocab, dtype, kind):
    dump = _dump(vocab, dtype, kind)
    sums = _sums(dump, kind)
    # Refused before (tolerance 1e-6, or 1e-3 for float16: only float16 probabilities passed).
    refused_before = np.max(np.abs(sums - 1)) > (1e-3 if dtype == "float16" else 1e-6)
    assert refused_before == ((dtype, kind) != ("float16", "probs"))
    stored = "bfloat16" if dtype == "bfloat16" else None
    rows = as_log_rows(dump, kind, label="P", stored=stored)
    assert np.allclose(rows.probs().sum(axis=1), 1.0)
    if dtype != "float32":
        # The same values in a float32 array (tensor.float().numpy()) are judged by their own type's rounding.
        as_log_rows(np.asarray(dump, dtype=np.float32), kind, label="P")


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_the_tolerance_is_at_most_a_few_times_the_largest_rounding(vocab, dtype, kind):
    # "and no looser": the worst row uses a good part of its tolerance — a tenth or more of the stored
    # type's rounding bound; float32's, set by the lane sums' losses on structured rows (two-level, confident
    # rows with the top token first: 15·u·√V), is used 3% by these rows at 32,000 outcomes and 12% at 128,256.
    dump = np.asarray(_dump(vocab, dtype, kind), dtype=np.float64)
    misses = np.abs(_sums(dump, kind) - 1)
    used = max(misses[i] / row_tolerance(dump[i], kind, dtype)[0] for i in range(dump.shape[0]))
    assert (0.02 if dtype == "float32" else 0.1) < used < 1


@pytest.mark.parametrize(("vocab", "off"), [(32000, 1e-3), (128256, 1e-2), (50257, 2e-3)])
@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_a_float32_row_off_by_more_than_rounding_is_an_error(vocab, off, kind):
    dump = np.asarray(_dump(vocab, "float32", kind, rows=8), dtype=np.float64)
    bad = dump.copy()
    if kind == "probs":
        bad[3] *= 1 + off
    else:
        bad[3] += np.log1p(off)
    bad = bad.astype(np.float32)
    with pytest.raises(DistributionError, match=r"row 3 sums to 1\.0"):
        as_log_rows(bad, kind, label="P")
    low = (dump * (1 - off) if kind == "probs" else dump + np.log1p(-off)).astype(np.float32)
    with pytest.raises(DistributionError, match=r"row 0 sums to 0\.9"):
        as_log_rows(low, kind, label="P")


def test_the_tolerance_grows_slower_than_the_vocabulary():
    u = UNIT_ROUNDOFF["float32"]
    assert sum_tolerance("float32", 32000) < 1e-3 < 32000 * u
    assert sum_tolerance("float32", 128256) < 128256 * u / 4
    assert sum_tolerance("float32", 256000) < 2e-3
    ratio = sum_tolerance("float32", 4 * 32000) / sum_tolerance("float32", 32000)
    assert 1.9 < ratio < 2.1  # ∝ √V at real vocabularies
    # A short hand-made row keeps about the old float64/float32 tolerance of 1e-6.
    assert sum_tolerance("float64", 3) < 1.2e-6 and sum_tolerance("float32", 10) < 2e-6


def test_a_short_row_is_judged_by_its_own_precision():
    with pytest.raises(DistributionError, match=r"sums to 1\.00001, not 1 \(tolerance 1\.1e-06 for 2 float64"):
        as_log_rows(np.array([[0.5, 0.50001]]), "probs", label="P")
    with pytest.raises(DistributionError, match=r"for 2 float32 values"):
        as_log_rows(np.array([[0.5, 0.50001]], dtype=np.float32), "probs", label="P")
    # float16 rounds each entry by up to 2⁻¹¹ of itself: 0.5 + 0.50049 is rounding, 0.5 + 0.502 is not.
    as_log_rows(np.array([[0.5, 0.5004883]], dtype=np.float16), "probs", label="P")
    with pytest.raises(DistributionError, match=r"for 2 float16 values"):
        as_log_rows(np.array([[0.5, 0.502]], dtype=np.float16), "probs", label="P")


def test_bfloat16_values_in_a_float32_array_are_recognised_only_when_every_value_is_one():
    row = np.asarray(torchlike.softmax(np.random.default_rng(1).normal(0, 3, (1, 1000)), "bfloat16"),
                     dtype=np.float32)
    tolerance, narrowest = row_tolerance(row[0], "probs", "float32")
    assert narrowest == "bfloat16" and tolerance > UNIT_ROUNDOFF["bfloat16"]
    scaled = (row * np.float32(1.003)).astype(np.float32)  # no longer bfloat16 values: float32 rounding
    assert row_tolerance(scaled[0], "probs", "float32")[1] == "float32"
    with pytest.raises(DistributionError, match="float32 values"):
        as_log_rows(scaled, "probs", label="P")


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_real_torch_softmax_dumps_pass(vocab, dtype):
    torch = pytest.importorskip("torch")
    logits = torch.tensor(torchlike.realistic_logits(np.random.default_rng(7), 32, vocab), dtype=torch.float32)
    tensor = logits.to(getattr(torch, dtype))
    for kind, function in (("probs", torch.softmax), ("logprobs", torch.log_softmax)):
        out = function(tensor, -1)
        values = out.float().numpy() if dtype == "bfloat16" else out.numpy()
        as_log_rows(values, kind, label="P", stored=dtype)
        as_log_rows(out.float().numpy(), kind, label="P")
        bad = out.double().numpy().copy()
        bad[0] = bad[0] * 1.01 if kind == "probs" else bad[0] + np.log(1.01)
        with pytest.raises(DistributionError, match="row 0 sums to"):
            as_log_rows(bad, kind, label="P")


def test_float32_and_bfloat16_softmax_files_pass_through_the_cli(cli, tmp_path):
    from tests.io.test_llm_formats import write_safetensors

    logits = _logits(32000, 32)
    p, q = torchlike.softmax(logits[:8], "float32"), torchlike.softmax(logits[8:16], "float32")
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    run = cli("kl", tmp_path / "p.npy", tmp_path / "q.npy", "-q")  # refused before: sums 1 ± 1.7e-5
    assert run.code == 0, run.err
    wide_p, wide_q = (np.asarray(a, np.float64) / np.asarray(a, np.float64).sum(1, keepdims=True) for a in (p, q))
    assert float(run.out) == pytest.approx(np.mean(np.sum(wide_p * np.log(wide_p / wide_q), axis=1)), rel=1e-9)
    bits = {name: (torchlike.softmax(rows, "bfloat16").view(np.uint32) >> 16).astype(np.uint16)
            for name, rows in (("p", logits[:8]), ("q", logits[8:16]))}
    path = write_safetensors(tmp_path / "pq.safetensors", {}, bf16=bits)
    run = cli("kl", f"{path}:p", f"{path}:q", "-q")  # refused before: bfloat16 sums 1 ± 2e-3
    assert run.code == 0, run.err
