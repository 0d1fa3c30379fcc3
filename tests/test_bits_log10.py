"""callbacks.bits_log10 against float64 log10: the compiled logging step bins by it."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.bits_log10 import bits_log10


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 8e-6), (torch.float64, 1e-13)])
def test_bits_log10_is_log10_to_round_off_over_the_whole_range(dtype, tolerance):
    """Every binade from the smallest subnormal to the largest finite value."""
    info = torch.finfo(dtype)
    g = torch.Generator().manual_seed(0)
    low = math.log2(info.smallest_normal) - (23 if dtype == torch.float32 else 52)
    high = math.log2(info.max)
    exponents = low + torch.rand(400_000, generator=g, dtype=torch.float64) * (high - low)
    x = torch.exp2(exponents).to(dtype)
    x = x[(x > 0) & torch.isfinite(x)]
    assert (x < info.smallest_normal).any()  # subnormals are in the sample
    truth = torch.log10(x.double())
    assert (bits_log10(x).double() - truth).abs().max().item() <= tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bits_log10_answers_special_values_as_torch_log10(dtype):
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, -1.0, -1e-40], dtype=dtype)
    torch.testing.assert_close(bits_log10(special), torch.log10(special), equal_nan=True)
    assert bits_log10(torch.tensor([1.0, 10.0, 1e-3], dtype=dtype)).tolist() == pytest.approx(
        [0.0, 1.0, -3.0], abs=1e-6
    )
