"""CUDA kernels against the PyTorch reference paths (run on a GPU machine after building the extension)."""
import math

import pytest
import torch

from mmdet3d.ops import BEVPoolPlan, Voxelization, bev_pool, bev_pool_depth, box_iou_bev, nms_bev
from mmdet3d.ops.common import FORCE_REFERENCE_ENV, load_extension

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def kernels_enabled(monkeypatch):
    monkeypatch.delenv(FORCE_REFERENCE_ENV, raising=False)
    assert load_extension() is not None, "mmdet3d._ext is not built: run `make ext` (FORCE_CUDA=1 pip install -e .)"


def frustum(BN, D, fH, fW, C, grid, seed):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(BN, D, fH, fW, generator=g).softmax(1)
    feats = torch.randn(BN, C, fH, fW, generator=g)
    coords = torch.stack([torch.randint(-2, n + 2, (BN, D, fH, fW), generator=g) for n in grid], -1)
    return depth, feats, coords


@pytest.mark.parametrize("max_points,max_voxels", [(10, 200000), (3, 500)])
def test_hard_voxelization(max_points, max_voxels):
    g = torch.Generator().manual_seed(0)
    points = torch.rand(50000, 5, generator=g) * torch.tensor([110.0, 110.0, 9.0, 1.0, 1.0])
    points[:, :3] -= torch.tensor([55.0, 55.0, 5.0])
    points[:1000, :3] = (points[:1000, :3] / 0.075).round() * 0.075  # on voxel faces
    layer = Voxelization([0.075, 0.075, 0.2], [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0], max_points, max_voxels)
    ref = layer(points)
    out = layer(points.cuda())
    for a, b in zip(out, ref):
        assert a.is_cuda and a.dtype == b.dtype
        assert torch.equal(a.cpu(), b)


def test_bev_pool_forward_backward():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(20000, 16, generator=g)
    coords = torch.stack([torch.randint(-1, n + 1, (20000,), generator=g) for n in (50, 40, 2, 2)], 1)
    grad = torch.randn(2, 16, 2, 50, 40, generator=g)
    results = []
    for device in ("cpu", "cuda"):
        f = feats.to(device).requires_grad_(True)
        out = bev_pool(f, coords.to(device), 2, 2, 50, 40)
        (out * grad.to(device)).sum().backward()
        results.append((out.detach().cpu(), f.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1])


@pytest.mark.parametrize("B,grid", [(1, (180, 180, 1)), (2, (64, 48, 3))])
def test_bev_pool_depth_forward_backward_and_determinism(B, grid):
    depth, feats, coords = frustum(6 * B, 30, 16, 44, 40, grid, seed=B)
    X, Y, Z = grid
    grad = torch.randn(B, 40 * Z, X, Y, generator=torch.Generator().manual_seed(9))
    results = []
    for device in ("cpu", "cuda", "cuda"):
        d = depth.to(device).requires_grad_(True)
        f = feats.to(device).requires_grad_(True)
        out = bev_pool_depth(d, f, coords.to(device), B, grid)
        (out * grad.to(device)).sum().backward()
        results.append([t.detach().cpu() for t in (out, d.grad, f.grad)])
    for cuda_result, cpu_result in zip(results[1], results[0]):
        torch.testing.assert_close(cuda_result, cpu_result, rtol=1e-4, atol=1e-4)
    for first, second in zip(results[1], results[2]):
        assert torch.equal(first, second)


def test_bev_pool_depth_reference_path_on_cuda(monkeypatch):
    depth, feats, coords = [t.cuda() for t in frustum(6, 20, 8, 22, 16, (50, 50, 1), seed=3)]
    plan = BEVPoolPlan(coords, 1, (50, 50, 1))
    kernel = plan(depth, feats)
    monkeypatch.setenv(FORCE_REFERENCE_ENV, "1")
    torch.testing.assert_close(BEVPoolPlan(coords, 1, (50, 50, 1))(depth, feats), kernel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_box_iou_bev(dtype, atol):
    g = torch.Generator().manual_seed(4)
    boxes = torch.cat([torch.rand(800, 2, generator=g) * 30, torch.rand(800, 2, generator=g) * 4 + 0.3,
                       (torch.rand(800, 1, generator=g) * 2 - 1) * math.pi], 1).to(dtype)
    x, y, l, _, yaw = boxes[0].tolist()
    boxes[1] = boxes[0]
    boxes[2] = boxes[0] + torch.tensor([0, 0, 0, 0, math.pi], dtype=dtype)  # heading flipped
    boxes[3] = boxes[0] + torch.tensor([l * math.cos(yaw), l * math.sin(yaw), 0, 0, 0], dtype=dtype)  # touching
    ref = box_iou_bev(boxes, boxes[:300])
    out = box_iou_bev(boxes.cuda(), boxes[:300].cuda())
    assert out.dtype == dtype
    torch.testing.assert_close(out.cpu(), ref, atol=atol, rtol=0)


def test_nms_bev():
    g = torch.Generator().manual_seed(5)
    boxes = torch.cat([torch.rand(1000, 2, generator=g) * 40, torch.rand(1000, 2, generator=g) * 4 + 0.5,
                       (torch.rand(1000, 1, generator=g) * 2 - 1) * math.pi], 1).double()  # no IoU ties at 0.2
    scores = torch.rand(1000, generator=g)
    ref = nms_bev(boxes, scores, 0.2, pre_max_size=800, post_max_size=300)
    out = nms_bev(boxes.cuda(), scores.cuda(), 0.2, pre_max_size=800, post_max_size=300)
    assert out.is_cuda and torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_deformable_attention_triton(monkeypatch, dtype, tol):
    from mmdet3d.ops import multi_scale_deformable_attn
    from mmdet3d.ops.msda import msda

    calls = []
    kernel = msda._triton_kernel()
    assert kernel is not None, "Triton is not installed"
    monkeypatch.setattr(msda, "_triton_kernel", lambda: lambda *a: calls.append(1) or kernel(*a))
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[45, 45], [23, 23]])
    starts = torch.tensor([0, 45 * 45])
    value = torch.randn(2, 45 * 45 + 23 * 23, 8, 10, generator=g, dtype=dtype)
    loc = torch.rand(2, 300, 8, 2, 20, 2, generator=g, dtype=dtype) * 1.2 - 0.1
    attn = torch.rand(2, 300, 8, 2, 20, generator=g, dtype=dtype).softmax(-1)
    grads = []
    for device in ("cpu", "cuda"):
        inputs = [t.to(device).requires_grad_(True) for t in (value, loc, attn)]
        out = multi_scale_deformable_attn(inputs[0], shapes.to(device), starts.to(device), inputs[1], inputs[2])
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype, device=device).view_as(out)).sum().backward()
        grads.append([out.detach().cpu()] + [t.grad.cpu() for t in inputs])
    assert calls, "the CUDA call did not use the Triton kernel"
    for name, ref, got in zip(("output", "value", "sampling_locations", "attention_weights"), *grads):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")
