"""The benchmark's own files (tests/bench/run.py): real safetensors, bfloat16 rounded as torch rounds."""

from __future__ import annotations

import numpy as np

import klcli
from tests import torchlike
from tests.bench.run import bfloat16_bits, save_safetensors


def _nearest_bf16(values: np.ndarray) -> np.ndarray:
    """The bfloat16 nearest each finite float32 value (ties to the even pattern), chosen in float64."""
    bits = values.view(np.uint32)
    low = (bits >> 16).astype(np.uint32)  # truncation: the pattern at or below |value|
    high = low + 1
    as_value = lambda pattern: (pattern << 16).view(np.float32).astype(np.float64)  # noqa: E731
    exact = values.astype(np.float64)
    below, above = np.abs(exact - as_value(low)), np.abs(as_value(high) - exact)
    return np.where((below < above) | ((below == above) & (low % 2 == 0)), low, high).astype(np.uint16)


def test_bfloat16_bits_round_to_nearest_even_not_truncation():
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.standard_normal(200_000, dtype=np.float32) * 4,
        # ties of both parities, and values just either side of a tie
        ((np.arange(2000, dtype=np.uint32) << 16) | 0x3F000000 | 0x8000).view(np.float32),
        ((np.arange(2000, dtype=np.uint32) << 16) | 0x3F000000 | 0x7FFF).view(np.float32),
        ((np.arange(2000, dtype=np.uint32) << 16) | 0x3F000000 | 0x8001).view(np.float32),
        -((np.arange(2000, dtype=np.uint32) << 16) | 0x00000000 | 0x8000).view(np.float32),  # subnormals
    ])
    got = bfloat16_bits(values)
    np.testing.assert_array_equal(got, _nearest_bf16(values))
    truncated = (values.view(np.uint32) >> 16).astype(np.uint16)
    assert np.count_nonzero(got != truncated) > 50_000  # (a truncating writer fails the line above too)
    np.testing.assert_array_equal((got.astype(np.uint32) << 16).view(np.float32), torchlike.round_bf16(values))


def test_bfloat16_bits_keep_infinities_and_nans():
    values = np.array([np.inf, -np.inf, np.nan, -np.nan, np.finfo(np.float32).max], dtype=np.float32)
    widened = (bfloat16_bits(values).astype(np.uint32) << 16).view(np.float32)
    assert widened[:2].tolist() == [np.inf, -np.inf]
    assert np.isnan(widened[2:4]).all()
    assert widened[4] == np.inf  # (the largest float32 rounds up past bfloat16's largest, as torch's does)


def test_the_benchmark_safetensors_file_is_read_by_klcli_as_its_rounded_values(tmp_path):
    logits = np.random.default_rng(4).standard_normal((600, 37), dtype=np.float32)  # > one 256-row write
    path = tmp_path / "p.safetensors"
    save_safetensors(path, "logits", logits)
    assert klcli.read(str(path)).tolist() == torchlike.round_bf16(logits).tolist()
    save_safetensors(path, "logits", logits, dtype="F16")
    assert klcli.read(str(path)).tolist() == logits.astype(np.float16).astype(np.float32).tolist()
