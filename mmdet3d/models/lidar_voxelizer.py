"""Hard voxelisation of a batch of point clouds with the mean of each voxel's points as its feature."""
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.ops import Voxelization
from mmdet3d.registry import MODELS

__all__ = ["HardVoxelizer"]


@MODELS.register_module()
class HardVoxelizer(nn.Module):
    """``forward(points)`` with points a list of B tensors [P_b, C] -> (features [M, C], coords [M, 4] int32 as
    (batch, x, y, z), B). A voxel keeps at most ``max_num_points`` points; ``max_voxels`` may be a (train, test)
    pair, chosen by ``self.training``.
    """

    def __init__(self, voxel_size, point_cloud_range, max_num_points, max_voxels):
        super().__init__()
        if max_num_points <= 0:
            raise ValueError(f"HardVoxelizer: max_num_points must be positive, got {max_num_points}")
        self.voxelize = Voxelization(voxel_size, point_cloud_range, max_num_points, max_voxels, deterministic=True)

    def forward(self, points):
        feats, coords = [], []
        for b, cloud in enumerate(points):
            if cloud.dim() != 2:
                raise ValueError(f"HardVoxelizer: points[{b}] must be [P, C], got {list(cloud.shape)}")
            voxels, voxel_coords, num_points = self.voxelize(cloud.float())
            feats.append(voxels.sum(dim=1) / num_points.clamp(min=1).unsqueeze(1).to(voxels.dtype))
            coords.append(F.pad(voxel_coords.int(), (1, 0), value=b))
        return torch.cat(feats), torch.cat(coords), len(points)
