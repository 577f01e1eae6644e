"""The Triton deformable-attention kernels, run by Triton's interpreter on the CPU, against the brute force and the
PyTorch path; and the dispatch that picks them."""
import importlib.util
import os

import pytest
import torch

from mmdet3d.ops.common import FORCE_REFERENCE_ENV
from mmdet3d.ops.msda import msda
from test_msda import SHAPES, brute_force, inputs

KERNELS = os.path.join(os.path.dirname(msda.__file__), "msda_triton.py")


@pytest.fixture(scope="module")
def interpreted():
    """A copy of mmdet3d/ops/msda/msda_triton.py whose kernels run in Triton's interpreter (TRITON_INTERPRET=1 while
    they are decorated and while they run)."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    spec = importlib.util.spec_from_file_location("msda_triton_interpreted", KERNELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module.multi_scale_deformable_attn_triton
    if before is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = before


def test_forward_matches_brute_force(interpreted):
    value, shapes, starts, loc, attn = inputs(0, Q=37)  # two query blocks, the second partly empty
    loc[0, 0, 0, 0, 0] = torch.tensor([0.5 / 4, 0.5 / 3])  # exactly pixel (0, 0)'s centre
    loc[1, 2, 1, 1, 2] = torch.tensor([-3.0, 7.0])  # far outside: all four corners padded
    out = interpreted(value, shapes, starts, loc, attn)
    assert out.shape == (2, 37, 6) and out.dtype == torch.float64
    torch.testing.assert_close(out, brute_force(value, SHAPES, loc, attn))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_backward_matches_the_pytorch_path(interpreted, dtype, tol):
    value, shapes, starts, loc, attn = inputs(1, dtype=dtype, Q=9, Dh=5, P=4)
    kernel = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    reference = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    out_k = interpreted(kernel[0], shapes, starts, kernel[1], kernel[2])
    out_r = msda.multi_scale_deformable_attn(reference[0], shapes, starts, reference[1], reference[2])
    grad = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (out_k * grad).sum().backward()
    (out_r * grad).sum().backward()
    torch.testing.assert_close(out_k, out_r, rtol=tol, atol=tol)
    for name, k, r in zip(("value", "sampling_locations", "attention_weights"), kernel, reference):
        torch.testing.assert_close(k.grad, r.grad, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


def test_half_precision_is_computed_in_float32(interpreted):
    value, shapes, starts, loc, attn = inputs(3, dtype=torch.float32)
    out = interpreted(value.half(), shapes, starts, loc.half(), attn.half())
    assert out.dtype == torch.float16
    expected = brute_force(value.half().double(), SHAPES, loc.half().double(), attn.half().double())
    torch.testing.assert_close(out.double(), expected, rtol=2e-3, atol=2e-3)


def test_dispatch_uses_triton_only_for_cuda_inputs(monkeypatch):
    monkeypatch.delenv(FORCE_REFERENCE_ENV, raising=False)
    cpu = torch.zeros(1)
    assert not msda.use_triton(cpu)
    fake_cuda = torch.empty(1, device="meta")
    monkeypatch.setattr(type(fake_cuda), "is_cuda", property(lambda t: t.device.type in ("cuda", "meta")))
    assert msda.use_triton(fake_cuda) == (msda._triton_kernel() is not None)
    assert not msda.use_triton(fake_cuda, cpu)
    monkeypatch.setenv(FORCE_REFERENCE_ENV, "1")
    assert not msda.use_triton(fake_cuda)
