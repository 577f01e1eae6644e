import pytest
import torch

from mmdet3d.ops import BEVPoolPlan, bev_cells, bev_pool, bev_pool_depth
from mmdet3d.ops.bev_pool import bev_pool_outer_product


def random_frustum(BN, D, fH, fW, C, grid, seed, dtype=torch.float64):
    """Depth, features and coords reaching one cell past every side of the grid (so some entries are dropped)."""
    g = torch.Generator().manual_seed(seed)
    X, Y, Z = grid
    depth = torch.rand(BN, D, fH, fW, generator=g, dtype=dtype)
    feats = torch.randn(BN, C, fH, fW, generator=g, dtype=dtype)
    coords = torch.stack([torch.randint(-1, n + 1, (BN, D, fH, fW), generator=g) for n in (X, Y, Z)], -1)
    return depth, feats, coords


def brute_force_bev_pool(feats, coords, B, D, H, W):
    out = torch.zeros(B, feats.shape[1], D, H, W, dtype=feats.dtype)
    for f, (x, y, z, b) in zip(feats, coords.tolist()):
        if 0 <= x < H and 0 <= y < W and 0 <= z < D and 0 <= b < B:
            out[b, :, z, x, y] += f
    return out


def outer_product_pool(depth, feats, coords, B, grid):
    """The definition of bev_pool_depth: bev_pool of the depth x feature outer product, Z slices to channels."""
    BN, D, fH, fW = depth.shape
    X, Y, Z = grid
    C = feats.shape[1]
    x = (depth[:, None] * feats[:, :, None]).permute(0, 2, 3, 4, 1).reshape(-1, C)
    batch = torch.arange(BN).div(BN // B, rounding_mode="floor").view(BN, 1, 1, 1, 1).expand(BN, D, fH, fW, 1)
    pooled = bev_pool(x, torch.cat([coords, batch], -1).reshape(-1, 4), B, Z, X, Y)
    return torch.cat(pooled.unbind(2), 1)


def test_bev_pool_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 5, generator=g)
    coords = torch.stack([torch.randint(-1, n + 1, (300,), generator=g) for n in (4, 3, 2, 2)], 1)
    out = bev_pool(feats, coords, B=2, D=2, H=4, W=3)
    assert out.shape == (2, 5, 2, 4, 3)
    torch.testing.assert_close(out, brute_force_bev_pool(feats, coords, 2, 2, 4, 3))


def test_bev_pool_gradcheck():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coords = torch.stack([torch.randint(-1, n + 1, (40,), generator=g) for n in (3, 3, 1, 2)], 1)
    assert torch.autograd.gradcheck(lambda f: bev_pool(f, coords, 2, 1, 3, 3), (feats,))


@pytest.mark.parametrize("B,cams,grid", [(1, 3, (6, 5, 1)), (2, 2, (4, 7, 3))])
def test_bev_pool_depth_equals_outer_product(B, cams, grid):
    depth, feats, coords = random_frustum(B * cams, 6, 4, 5, 7, grid, seed=B)
    out = bev_pool_depth(depth, feats, coords, B, grid)
    X, Y, Z = grid
    assert out.shape == (B, 7 * Z, X, Y)
    torch.testing.assert_close(out, outer_product_pool(depth, feats, coords, B, grid))


@pytest.mark.parametrize("pool", [bev_pool_depth, bev_pool_outer_product])
def test_bev_pool_depth_channel_layout_and_batches(pool):
    # Hand-placed entries: camera 1 belongs to sample 0, camera 2 to sample 1 (BN=4, B=2).
    depth = torch.zeros(4, 2, 1, 1)
    depth[1, 0] = 0.5
    depth[2, 1] = 2.0
    feats = torch.tensor([1.0, 10.0]).view(1, 2, 1, 1).repeat(4, 1, 1, 1)
    coords = torch.zeros(4, 2, 1, 1, 3, dtype=torch.long)
    coords[1, 0, 0, 0] = torch.tensor([2, 1, 1])   # x=2, y=1, z=1
    coords[2, 1, 0, 0] = torch.tensor([0, 3, 0])
    out = pool(depth, feats, coords, 2, (3, 4, 2))
    expected = torch.zeros(2, 4, 3, 4)
    expected[0, 2:4, 2, 1] = torch.tensor([0.5, 5.0])   # channels z*C + c with z=1
    expected[1, 0:2, 0, 3] = torch.tensor([2.0, 20.0])  # z=0
    # every other entry has depth 0 and lands in cell (0, 0, 0) of its sample
    torch.testing.assert_close(out, expected)


def test_bev_pool_depth_gradcheck():
    depth, feats, coords = random_frustum(4, 3, 2, 3, 2, (3, 4, 2), seed=3)
    plan = BEVPoolPlan(coords, 2, (3, 4, 2))
    depth.requires_grad_(True)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(plan, (depth, feats))


def test_bev_pool_depth_gradients_match_outer_product():
    depth, feats, coords = random_frustum(6, 8, 4, 4, 5, (5, 5, 1), seed=4, dtype=torch.float32)
    grad = torch.randn(1, 5, 5, 5)
    results = []
    for fn in (bev_pool_depth, outer_product_pool):
        d, f = depth.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        (fn(d, f, coords, 1, (5, 5, 1)) * grad).sum().backward()
        results.append((d.grad, f.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_plan_is_reusable_and_mixed_precision_is_promoted():
    depth, feats, coords = random_frustum(2, 4, 3, 3, 4, (4, 4, 1), seed=5, dtype=torch.float32)
    plan = BEVPoolPlan(coords.int(), 1, (4, 4, 1))
    for scale in (1.0, 3.0):
        torch.testing.assert_close(plan(depth * scale, feats), bev_pool_depth(depth * scale, feats, coords, 1,
                                                                              (4, 4, 1)))
    half = plan(depth.half(), feats.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, plan(depth.half().float(), feats.half().float()))


def test_all_entries_outside_grid():
    depth, feats, coords = random_frustum(2, 2, 2, 2, 3, (2, 2, 1), seed=6)
    out = bev_pool_depth(depth, feats, coords + 10, 1, (2, 2, 1))
    assert out.shape == (1, 3, 2, 2) and not out.any()


def test_bad_inputs():
    depth, feats, coords = random_frustum(4, 2, 2, 2, 3, (2, 2, 1), seed=7)
    with pytest.raises(ValueError, match="do not split"):
        BEVPoolPlan(coords, 3, (2, 2, 1))
    with pytest.raises(ValueError, match="integer"):
        BEVPoolPlan(coords.float(), 1, (2, 2, 1))
    with pytest.raises(ValueError, match="coords must be"):
        BEVPoolPlan(coords[..., :2], 1, (2, 2, 1))
    plan = BEVPoolPlan(coords, 2, (2, 2, 1))
    with pytest.raises(ValueError, match="depth"):
        plan(depth[:, :1], feats)
    with pytest.raises(ValueError, match="feats"):
        plan(depth, feats[:, :, :1])
    with pytest.raises(ValueError, match="coords"):
        bev_pool(torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.long), 1, 1, 1, 1)



@pytest.mark.parametrize("axis", [0, 1, 2])
def test_bev_cells_trunc_keeps_the_sliver_below_the_first_cell(axis):
    """BEVFusion's ``((p - lo) / step).long()``: cell coordinate -0.5 -> cell 0, -1.5 -> -1 (dropped); floor puts
    -0.5 in cell -1. Grid lower corner (-2, -3, -10), steps (0.5, 0.25, 20)."""
    lower, step = torch.tensor([-2.0, -3.0, -10.0]), torch.tensor([0.5, 0.25, 20.0])
    points = (lower + 0.5 * step).repeat(4, 1)  # the first cell's centre on the two other axes
    for row, cell_coordinate in enumerate([-0.5, -1.5, 0.5, 2.25]):
        points[row, axis] = lower[axis] + cell_coordinate * step[axis]
    trunc = bev_cells(points, lower, step)
    floor = bev_cells(points, lower, step, rule="floor")
    assert trunc.dtype == torch.int64
    assert trunc[:, axis].tolist() == [0, -1, 0, 2]
    assert floor[:, axis].tolist() == [-1, -2, 0, 2]
    others = [a for a in range(3) if a != axis]
    assert (trunc[:, others] == 0).all() and (floor[:, others] == 0).all()


def test_bev_cells_rejects_unknown_rule():
    with pytest.raises(ValueError, match="rule must be one of"):
        bev_cells(torch.zeros(1, 3), [0, 0, 0], [1, 1, 1], rule="round")
