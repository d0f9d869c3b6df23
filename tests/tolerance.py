"""The tolerance rule of docs/design.md section 4, in one place.

    max|fast - ref64| <= 2 * max|ref_same_dtype - ref64| + floor(dtype) * max(1, max|ref64|)

`ref_same_dtype` is the reference run in the fast result's dtype, so the bound is "no worse than twice
what plain torch loses to rounding in that dtype". The floor, scaled by the tensor's magnitude, keeps the
rule from demanding bitwise luck where the reference happens to round exactly; it is far below any
error a wrong formula or a wrong gradient makes (those are O(1) relative). Under torch.autocast the
reference runs under the same autocast and the floor is the autocast dtype's (`floor_dtype`): results
there may be float32 tensors computed from 16-bit GEMMs.
"""

from __future__ import annotations

import torch

FLOORS = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.bfloat16: 2e-2,
    torch.float16: 2e-3,
}


def tolerance(ref_same_dtype: torch.Tensor, ref64: torch.Tensor, floor_dtype=None) -> float:
    """The bound above; the floor of `floor_dtype` (default: ref_same_dtype's dtype)."""
    ref64 = ref64.detach().double().cpu()
    if ref64.numel() == 0:
        return 0.0
    scale = max(1.0, float(ref64.abs().max()))
    base = float((ref_same_dtype.detach().double().cpu() - ref64).abs().max())
    return 2.0 * base + FLOORS[floor_dtype or ref_same_dtype.dtype] * scale


def assert_close_to_reference(fast: torch.Tensor, ref_same_dtype: torch.Tensor, ref64: torch.Tensor, name: str = "",
                              floor_dtype=None):
    """Assert the rule above (and that fast has ref_same_dtype's dtype); the message gives the error, the bound
    and the reference's own error."""
    assert fast.shape == ref64.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(ref64.shape)}"
    assert fast.dtype == ref_same_dtype.dtype, f"{name}: dtype {fast.dtype} != {ref_same_dtype.dtype}"
    if ref64.numel() == 0:
        return
    fast64 = fast.detach().double().cpu()
    assert torch.isfinite(fast64).all(), f"{name}: non-finite values"
    err = float((fast64 - ref64.detach().double().cpu()).abs().max())
    bound = tolerance(ref_same_dtype, ref64, floor_dtype)
    ref_err = float((ref_same_dtype.detach().double().cpu() - ref64.detach().double().cpu()).abs().max())
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (reference's own error {ref_err:.3e})"
