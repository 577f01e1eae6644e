"""Point-cloud voxelization (hard and dynamic)."""
from .voxelization import Voxelization, dynamic_voxelize, hard_voxelize, point_voxel_coords

__all__ = ["Voxelization", "dynamic_voxelize", "hard_voxelize", "point_voxel_coords"]
