"""Custom ops: each runs in pure PyTorch everywhere and through the CUDA extension ``mmdet3d._ext`` for CUDA
tensors when it is built (``MMDET3D_FORCE_REFERENCE_OPS=1`` forces the PyTorch paths).

Sparse convolutions live in ``mmdet3d.ops.spconv`` (imported on demand: it needs the optional spconv package).
"""
from .bev_pool import BEVPoolPlan, bev_cells, bev_pool, bev_pool_depth
from .iou3d import box_iou_bev, circle_nms, nms_bev
from .msda import multi_scale_deformable_attn
from .voxel import Voxelization

__all__ = [
    "BEVPoolPlan", "Voxelization", "bev_cells", "bev_pool", "bev_pool_depth", "box_iou_bev", "circle_nms",
    "multi_scale_deformable_attn", "nms_bev",
]
