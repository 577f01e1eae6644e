"""Checks of the Triton deformable-attention kernels, run by ``test_msda_triton.py`` in a fresh interpreter with
TRITON_INTERPRET=1 set before Triton is imported (Triton decides at import time whether its own library functions are
interpreted, so the flag cannot be switched on inside a test process that may already have imported it).

    TRITON_INTERPRET=1 python tests/ops/msda_triton_checks.py CHECK [ARGS...]
"""
import os
import sys

import torch

from mmdet3d.ops.msda import msda
from mmdet3d.ops.msda.msda_triton import multi_scale_deformable_attn_triton as kernel
from test_msda import SHAPES, brute_force, inputs


def forward_matches_brute_force():
    value, shapes, starts, loc, attn = inputs(0, Q=37)  # two query blocks, the second partly empty
    loc[0, 0, 0, 0, 0] = torch.tensor([0.5 / 4, 0.5 / 3])  # exactly pixel (0, 0)'s centre
    loc[1, 2, 1, 1, 2] = torch.tensor([-3.0, 7.0])  # far outside: all four corners padded
    out = kernel(value, shapes, starts, loc, attn)
    assert out.shape == (2, 37, 6) and out.dtype == torch.float64
    torch.testing.assert_close(out, brute_force(value, SHAPES, loc, attn))


def backward_matches_the_pytorch_path(dtype, tol):
    dtype, tol = getattr(torch, dtype), float(tol)
    value, shapes, starts, loc, attn = inputs(1, dtype=dtype, Q=9, Dh=5, P=4)
    ours = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    reference = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    out_k = kernel(ours[0], shapes, starts, ours[1], ours[2])
    out_r = msda.multi_scale_deformable_attn(reference[0], shapes, starts, reference[1], reference[2])
    grad = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (out_k * grad).sum().backward()
    (out_r * grad).sum().backward()
    torch.testing.assert_close(out_k, out_r, rtol=tol, atol=tol)
    for name, k, r in zip(("value", "sampling_locations", "attention_weights"), ours, reference):
        torch.testing.assert_close(k.grad, r.grad, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


def half_precision_is_computed_in_float32():
    value, shapes, starts, loc, attn = inputs(3, dtype=torch.float32)
    out = kernel(value.half(), shapes, starts, loc.half(), attn.half())
    assert out.dtype == torch.float16
    expected = brute_force(value.half().double(), SHAPES, loc.half().double(), attn.half().double())
    torch.testing.assert_close(out.double(), expected, rtol=2e-3, atol=2e-3)


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("msda_triton_checks.py: set TRITON_INTERPRET=1 (the kernels run in Triton's interpreter)")
    globals()[sys.argv[1]](*sys.argv[2:])
