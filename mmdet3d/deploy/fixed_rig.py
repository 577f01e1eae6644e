"""Lift-splat with the camera rig fixed at export time: the frustum -> BEV cell plan of ``BEVPoolPlan`` becomes
constant index tensors, and pooling a gather, a product and an ``index_add`` (ONNX ``ScatterND`` with add reduction).
"""
import torch
from torch import nn

from mmdet3d.models.vtransforms import LSSTransform
from mmdet3d.ops import BEVPoolPlan

__all__ = ["RIG_KEYS", "FixedRigLSS"]

# The matrices the view transform's geometry reads (``BaseTransform.get_geometry``), in its argument order, and the
# rig's other matrix, read by a depth prior (``BaseTransform.apply_depth_prior``).
GEOMETRY_KEYS = ("camera2lidar", "camera_intrinsics", "img_aug_matrix", "lidar_aug_matrix")
RIG_KEYS = GEOMETRY_KEYS + ("camera2ego",)


class FixedRigLSS(nn.Module):
    """An ``LSSTransform`` whose geometry was computed once from ``rig`` (``{key: tensor}`` of ``RIG_KEYS`` with
    batch size 1); called with the view transform's signature, it ignores the camera matrices given."""

    def __init__(self, vtransform, rig):
        super().__init__()
        if type(vtransform) is not LSSTransform:
            raise ValueError(f"{type(vtransform).__name__}: only the camera-only LSSTransform can be exported with a "
                             "fixed rig (this view transform reads LiDAR points)")
        self.vtransform = vtransform
        with torch.no_grad():
            geom = vtransform.get_geometry(*(rig[k].float() for k in GEOMETRY_KEYS))
            if geom.shape[0] != 1:
                raise ValueError(f"FixedRigLSS: the calibration batch must hold one sample, got {geom.shape[0]}")
            plan = BEVPoolPlan(vtransform.voxel_coords(geom), 1, vtransform.grid_size)
            # A depth prior depends on the rig alone: a constant offset of the depth logits.
            zeros = torch.zeros(geom.shape[1], vtransform.D, *vtransform.feature_size)
            offset = vtransform.apply_depth_prior(zeros, rig["camera2ego"].float(), rig["camera_intrinsics"].float(),
                                                  rig["img_aug_matrix"].float())
        self.register_buffer("depth_offset", offset if vtransform.depth_prior else None, persistent=False)
        self.num_cells = plan.num_cells
        # One row per plan non-zero: the BEV cell it adds to, the depth entry weighting it and the feature pixel.
        cell = torch.repeat_interleave(torch.arange(plan.num_cells), plan.crow.long().diff())
        self.register_buffer("cell", cell, persistent=False)
        self.register_buffer("entry", plan.entry_sorted.long(), persistent=False)
        self.register_buffer("pixel", plan.col.long(), persistent=False)

    def forward(self, img, points=None, *matrices, metas=None):
        """img [1, N, C_in, fH, fW] -> (BEV [1, C*Z, X/ds, Y/ds], depth probabilities [N, D, fH, fW])."""
        prior = None if self.depth_offset is None else (lambda logits: logits + self.depth_offset)
        depth, feats = self.vtransform.get_cam_feats(img.float(), prior)
        n, c, fh, fw = feats.shape
        feats_cl = feats.permute(0, 2, 3, 1).reshape(n * fh * fw, c)
        weighted = depth.reshape(-1)[self.entry].unsqueeze(1) * feats_cl[self.pixel]
        cells = weighted.new_zeros(self.num_cells, c).index_add(0, self.cell, weighted)
        x, y, z = self.vtransform.grid_size
        bev = cells.view(1, z, x, y, c).permute(0, 1, 4, 2, 3).reshape(1, z * c, x, y)
        return self.vtransform.downsample(bev), depth
