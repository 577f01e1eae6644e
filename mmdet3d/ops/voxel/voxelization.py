"""Hard and dynamic voxelization of a point cloud (BEVFusion's ``Voxelization``, coordinates in (x, y, z) order)."""
import torch
from torch import nn

from ..common import cuda_kernels

__all__ = ["Voxelization", "hard_voxelize", "dynamic_voxelize", "point_voxel_coords"]


def _grid_spec(voxel_size, point_cloud_range):
    voxel_size = [float(v) for v in voxel_size]
    pc_range = [float(v) for v in point_cloud_range]
    if len(voxel_size) != 3 or len(pc_range) != 6:
        raise ValueError(f"voxel_size needs 3 values and point_cloud_range 6, got {voxel_size} and {pc_range}")
    if min(voxel_size) <= 0 or any(pc_range[i + 3] <= pc_range[i] for i in range(3)):
        raise ValueError(f"voxel_size must be positive and point_cloud_range (min, max) ordered: "
                         f"{voxel_size}, {pc_range}")
    grid_size = [int(round((pc_range[i + 3] - pc_range[i]) / voxel_size[i])) for i in range(3)]
    return voxel_size, pc_range[:3], grid_size


def _check_points(points):
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] < 3:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must be a [P, C>=3] tensor, got {shape}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got {points.dtype}")


def point_voxel_coords(points, voxel_size, range_min, grid_size):
    """Integer voxel coordinates ``[P, 3]`` (x, y, z) of each point and the mask of points inside the grid.

    ``floor((p - min) / size)`` is evaluated in the points' dtype, as the CUDA kernel does, so both paths agree on
    points that lie exactly on a voxel boundary.
    """
    size = points.new_tensor(voxel_size)
    lo = points.new_tensor(range_min)
    coords = torch.floor((points[:, :3] - lo) / size).long()
    valid = ((coords >= 0) & (coords < coords.new_tensor(grid_size))).all(1)
    return coords, valid


def _group_by_voxel(coords, valid, grid_size):
    """Groups the valid points by voxel, voxels numbered in the order their first point appears.

    Returns, for the valid points sorted by voxel (each voxel's points in input order): their point index, voxel
    number and rank inside the voxel; and per voxel: its first point's index and its number of points.
    """
    point_idx = valid.nonzero().squeeze(1)
    c = coords[point_idx]
    keys = (c[:, 0] * grid_size[1] + c[:, 1]) * grid_size[2] + c[:, 2]
    # Stable, so that a voxel's points keep their input order (torch also sorts stable integer keys fastest).
    sorted_keys, order = torch.sort(keys, stable=True)
    n = keys.numel()
    is_start = torch.ones(n, dtype=torch.bool, device=keys.device)
    is_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    segment = torch.cumsum(is_start, 0) - 1
    segment_start = is_start.nonzero().squeeze(1)
    counts = torch.diff(segment_start, append=segment_start.new_tensor([n]))
    segment_of_voxel = torch.argsort(order[segment_start], stable=True)
    voxel_of_segment = torch.empty_like(segment_of_voxel)
    voxel_of_segment[segment_of_voxel] = torch.arange(segment_of_voxel.numel(), device=keys.device)
    slot = torch.arange(n, device=keys.device) - segment_start[segment]
    first_point = point_idx[order[segment_start[segment_of_voxel]]]
    return point_idx[order], voxel_of_segment[segment], slot, first_point, counts[segment_of_voxel]


def hard_voxelize(points, voxel_size, point_cloud_range, max_num_points, max_voxels):
    """Pure-PyTorch hard voxelization: ``(voxels[M, max_num_points, C], coords[M, 3] int32, num_points[M] int32)``.

    Voxels are numbered in first-seen point order and keep their first ``max_num_points`` points (zero padded);
    voxels beyond ``max_voxels`` and points outside the range are dropped.
    """
    _check_points(points)
    voxel_size, range_min, grid_size = _grid_spec(voxel_size, point_cloud_range)
    coords, valid = point_voxel_coords(points, voxel_size, range_min, grid_size)
    point_idx, voxel_id, slot, first_point, counts = _group_by_voxel(coords, valid, grid_size)
    num_voxels = min(first_point.numel(), int(max_voxels))
    keep = (voxel_id < num_voxels) & (slot < max_num_points)
    voxels = points.new_zeros(num_voxels, max_num_points, points.shape[1])
    voxels[voxel_id[keep], slot[keep]] = points[point_idx[keep]]
    voxel_coords = coords[first_point[:num_voxels]].int()
    num_points = counts[:num_voxels].clamp(max=max_num_points).int()
    return voxels, voxel_coords, num_points


def dynamic_voxelize(points, voxel_size, point_cloud_range):
    """Pure-PyTorch dynamic voxelization: ``(feats[M, C] mean of each voxel's points, coords[M, 3] int32)``,
    voxels in first-seen point order, no caps."""
    _check_points(points)
    voxel_size, range_min, grid_size = _grid_spec(voxel_size, point_cloud_range)
    coords, valid = point_voxel_coords(points, voxel_size, range_min, grid_size)
    point_idx, voxel_id, _, first_point, counts = _group_by_voxel(coords, valid, grid_size)
    sums = points.new_zeros(first_point.numel(), points.shape[1]).index_add_(0, voxel_id, points[point_idx])
    return sums / counts.to(points.dtype)[:, None], coords[first_point].int()


class Voxelization(nn.Module):
    """Voxelizes one point cloud ``[P, C]`` (x, y, z first).

    Hard mode (``max_num_points > 0``) returns ``(voxels[M, max_num_points, C], coords[M, 3] int32 (x, y, z),
    num_points[M] int32)``; dynamic mode (``max_num_points = -1``) returns ``(feats[M, C], coords[M, 3])`` with the
    mean of each voxel's points. ``max_voxels`` may be a ``(train, test)`` pair, picked by ``self.training``.
    Every path here is deterministic; ``deterministic`` is accepted for BEVFusion config compatibility.
    """

    def __init__(self, voxel_size, point_cloud_range, max_num_points, max_voxels=20000, deterministic=True):
        super().__init__()
        self.voxel_size, self.range_min, self.grid_size = _grid_spec(voxel_size, point_cloud_range)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        if int(max_num_points) == 0 or int(max_num_points) < -1:
            raise ValueError(f"max_num_points must be positive (hard) or -1 (dynamic), got {max_num_points}")
        self.max_num_points = int(max_num_points)
        pair = tuple(max_voxels) if isinstance(max_voxels, (tuple, list)) else (max_voxels, max_voxels)
        if len(pair) != 2 or min(pair) <= 0:
            raise ValueError(f"max_voxels must be a positive int or a (train, test) pair, got {max_voxels}")
        self.max_voxels = (int(pair[0]), int(pair[1]))
        self.deterministic = deterministic

    def forward(self, points):
        _check_points(points)
        if self.max_num_points == -1:
            return dynamic_voxelize(points, self.voxel_size, self.point_cloud_range)
        max_voxels = self.max_voxels[0] if self.training else self.max_voxels[1]
        ext = cuda_kernels(points)
        if ext is not None and points.dtype in (torch.float32, torch.float64):
            return tuple(ext.hard_voxelize(points.contiguous(), self.voxel_size, self.range_min, self.grid_size,
                                           self.max_num_points, max_voxels))
        return hard_voxelize(points, self.voxel_size, self.point_cloud_range, self.max_num_points, max_voxels)

    def extra_repr(self):
        return (f"voxel_size={self.voxel_size}, point_cloud_range={self.point_cloud_range}, "
                f"max_num_points={self.max_num_points}, max_voxels={self.max_voxels}")
