import numpy as np
import pytest
import torch

from mmdet3d.ops import Voxelization
from mmdet3d.ops.voxel import dynamic_voxelize, hard_voxelize

VOXEL = [0.5, 0.5, 1.0]
RANGE = [-2.0, -2.0, -1.0, 2.0, 2.0, 1.0]


def brute_force_hard(points, voxel_size, pc_range, max_points, max_voxels):
    """Point-by-point voxelization as BEVFusion's CPU kernel does it."""
    pts = points.numpy()
    grid = [int(round((pc_range[i + 3] - pc_range[i]) / voxel_size[i])) for i in range(3)]
    index_of = {}
    members = []
    for p in pts:
        c = tuple(int(np.floor((np.float32(p[i]) - np.float32(pc_range[i])) / np.float32(voxel_size[i])))
                  for i in range(3))
        if not all(0 <= c[i] < grid[i] for i in range(3)):
            continue
        if c not in index_of:
            if len(index_of) >= max_voxels:
                continue
            index_of[c] = len(index_of)
            members.append([])
        if len(members[index_of[c]]) < max_points:
            members[index_of[c]].append(p)
    voxels = np.zeros((len(members), max_points, pts.shape[1]), dtype=pts.dtype)
    for v, rows in enumerate(members):
        voxels[v, :len(rows)] = rows
    coords = np.array(sorted(index_of, key=index_of.get), dtype=np.int32).reshape(-1, 3)
    return voxels, coords, np.array([len(m) for m in members], dtype=np.int32)


def random_points(n, seed):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([5.0, 5.0, 2.6]) - torch.tensor([2.5, 2.5, 1.3])
    return torch.cat([xyz, torch.rand(n, 2, generator=g)], 1)


@pytest.mark.parametrize("max_points,max_voxels", [(3, 1000), (1, 7), (10, 25)])
def test_hard_voxelization_matches_brute_force(max_points, max_voxels):
    points = random_points(400, seed=max_voxels)
    # Points exactly on voxel faces and on the range's bounds (max bound is outside).
    points[:4, :3] = torch.tensor([[-2.0, -2.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.0], [-0.5, 1.0, 1.0]])
    voxels, coords, num = Voxelization(VOXEL, RANGE, max_points, max_voxels)(points)
    ref_voxels, ref_coords, ref_num = brute_force_hard(points, VOXEL, RANGE, max_points, max_voxels)
    assert coords.dtype == torch.int32 and num.dtype == torch.int32
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_array_equal(num.numpy(), ref_num)
    np.testing.assert_array_equal(voxels.numpy(), ref_voxels)


def test_hard_voxelization_caps_and_first_seen_order():
    p = torch.tensor([
        [0.1, 0.1, 0.1, 1.0],   # voxel A (x=4, y=4, z=1)
        [-1.9, 0.1, 0.1, 2.0],  # voxel B (x=0)
        [0.2, 0.2, 0.2, 3.0],   # A
        [1.9, 1.9, 0.9, 4.0],   # voxel C: beyond max_voxels=2, dropped
        [0.3, 0.3, 0.3, 5.0],   # A, third point: beyond max_points=2, dropped
        [-1.8, 0.2, 0.2, 6.0],  # B, still filled after C was refused
        [2.0, 0.0, 0.0, 7.0],   # x == range max: outside
    ])
    voxels, coords, num = Voxelization(VOXEL, RANGE, max_num_points=2, max_voxels=2)(p)
    assert coords.tolist() == [[4, 4, 1], [0, 4, 1]]
    assert num.tolist() == [2, 2]
    assert voxels[:, :, 3].tolist() == [[1.0, 3.0], [2.0, 6.0]]


def test_max_voxels_pair_follows_training_mode():
    points = random_points(300, seed=3)
    layer = Voxelization(VOXEL, RANGE, 4, max_voxels=(5, 9))
    assert layer.train()(points)[0].shape[0] == 5
    assert layer.eval()(points)[0].shape[0] == 9


def test_zero_padding_and_float64():
    points = random_points(50, seed=5).double()
    voxels, _, num = hard_voxelize(points, VOXEL, RANGE, 6, 100)
    assert voxels.dtype == torch.float64
    slots = torch.arange(6)[None, :, None].expand_as(voxels)
    assert (voxels[slots >= num[:, None, None].long()] == 0).all()


def test_dynamic_voxelization_means():
    points = random_points(500, seed=7)
    feats, coords = Voxelization(VOXEL, RANGE, -1)(points)
    _, ref_coords, _ = brute_force_hard(points, VOXEL, RANGE, 10**6, 10**6)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    for v in range(0, coords.shape[0], 7):
        c = coords[v].float()
        inside = ((points[:, :3] - torch.tensor(RANGE[:3])) / torch.tensor(VOXEL)).floor().eq(c).all(1)
        torch.testing.assert_close(feats[v], points[inside].mean(0))
    assert torch.equal(dynamic_voxelize(points, VOXEL, RANGE)[0], feats)


def test_no_points_in_range():
    points = torch.full((5, 4), 10.0)
    voxels, coords, num = Voxelization(VOXEL, RANGE, 3, 10)(points)
    assert voxels.shape == (0, 3, 4) and coords.shape == (0, 3) and num.shape == (0,)
    feats, coords = Voxelization(VOXEL, RANGE, -1)(points)
    assert feats.shape == (0, 4) and coords.shape == (0, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="points"):
        Voxelization(VOXEL, RANGE, 3, 10)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="point_cloud_range"):
        Voxelization(VOXEL, [0, 0, 0, 1, 1], 3, 10)
    with pytest.raises(ValueError, match="max_num_points"):
        Voxelization(VOXEL, RANGE, 0, 10)
    with pytest.raises(ValueError, match="max_voxels"):
        Voxelization(VOXEL, RANGE, 3, (1, 2, 3))
