"""Lift-splat for export. ``FixedRigLSS``: the camera rig fixed at export time, the frustum -> BEV cell plan of
``BEVPoolPlan`` constant index tensors, pooling a gather, a product and an ``index_add`` (ONNX ``ScatterND`` with add
reduction). ``DynamicRigLSS``: the rig given as graph inputs (``rig_inputs``), the cells computed in the graph.
"""
import torch
from torch import nn

from mmdet3d.models.vtransforms import LSSTransform
from mmdet3d.ops import BEVPoolPlan

__all__ = ["DYNAMIC_RIG_INPUTS", "RIG_KEYS", "DynamicRigLSS", "FixedRigLSS", "rig_inputs"]

# The matrices the view transform's geometry reads (``BaseTransform.get_geometry``), in its argument order, and the
# rig's other matrix, read by a depth prior (``BaseTransform.prior_offset``).
GEOMETRY_KEYS = ("camera2lidar", "camera_intrinsics", "img_aug_matrix", "lidar_aug_matrix")
RIG_KEYS = GEOMETRY_KEYS + ("camera2ego",)
# The inputs of a graph with the rig as inputs, each [1, N, 4, 4] (``rig_inputs``), and the view-transform argument
# whose place each takes when the detector calls its view transforms.
DYNAMIC_RIG_INPUTS = {"img_aug_inverse": "img_aug_matrix", "pixel_to_lidar": "camera2lidar",
                      "pixel_to_ego": "camera2ego"}


def rig_inputs(batch):
    """``{name: [B, N, 4, 4]}`` of ``DYNAMIC_RIG_INPUTS`` from a batch's matrices: the inverse image augmentation and
    the maps of (u d, v d, d, 1) in the un-augmented image to the augmented LiDAR frame and to the ego frame.
    Computed outside the graph, since ONNX has no matrix inverse."""
    intrinsics_inverse = torch.inverse(batch["camera_intrinsics"].float())
    return {"img_aug_inverse": torch.inverse(batch["img_aug_matrix"].float()),
            "pixel_to_lidar": batch["lidar_aug_matrix"].float()[:, None] @ batch["camera2lidar"].float()
            @ intrinsics_inverse,
            "pixel_to_ego": batch["camera2ego"].float() @ intrinsics_inverse}


def _check_exportable(vtransform):
    if type(vtransform) is not LSSTransform:
        raise ValueError(f"{type(vtransform).__name__}: only the camera-only LSSTransform can be exported "
                         "(this view transform reads LiDAR points)")


def _cells_to_bev(vtransform, cells):
    """Pooled cells [Z*X*Y, C] (cell ``(z * X + x) * Y + y``) -> the view transform's BEV [1, C*Z, X/ds, Y/ds]."""
    x, y, z = vtransform.grid_size
    bev = cells.view(1, z, x, y, cells.shape[1]).permute(0, 1, 4, 2, 3).reshape(1, z * cells.shape[1], x, y)
    return vtransform.downsample(bev)


class FixedRigLSS(nn.Module):
    """An ``LSSTransform`` whose geometry was computed once from ``rig`` (``{key: tensor}`` of ``RIG_KEYS`` with
    batch size 1); called with the view transform's signature, it ignores the camera matrices given."""

    def __init__(self, vtransform, rig):
        super().__init__()
        _check_exportable(vtransform)
        self.vtransform = vtransform
        with torch.no_grad():
            geom = vtransform.get_geometry(*(rig[k].float() for k in GEOMETRY_KEYS))
            if geom.shape[0] != 1:
                raise ValueError(f"FixedRigLSS: the calibration batch must hold one sample, got {geom.shape[0]}")
            plan = BEVPoolPlan(vtransform.voxel_coords(geom), 1, vtransform.grid_size)
            # A depth prior depends on the rig alone: a constant offset of the depth logits.
            offset = vtransform.prior_offset(rig["camera2ego"].float(), rig["camera_intrinsics"].float(),
                                             rig["img_aug_matrix"].float())
        self.register_buffer("depth_offset", offset, persistent=False)
        self.num_cells = plan.num_cells
        # One row per plan non-zero: the BEV cell it adds to, the depth entry weighting it and the feature pixel.
        cell = torch.repeat_interleave(torch.arange(plan.num_cells), plan.crow.long().diff())
        self.register_buffer("cell", cell, persistent=False)
        self.register_buffer("entry", plan.entry_sorted.long(), persistent=False)
        self.register_buffer("pixel", plan.col.long(), persistent=False)

    def forward(self, img, points=None, *matrices, metas=None):
        """img [1, N, C_in, fH, fW] -> (BEV [1, C*Z, X/ds, Y/ds], depth probabilities [N, D, fH, fW])."""
        depth, feats = self.vtransform.get_cam_feats(img.float(), self.depth_offset)
        n, c, fh, fw = feats.shape
        feats_cl = feats.permute(0, 2, 3, 1).reshape(n * fh * fw, c)
        weighted = depth.reshape(-1)[self.entry].unsqueeze(1) * feats_cl[self.pixel]
        cells = weighted.new_zeros(self.num_cells, c).index_add(0, self.cell, weighted)
        return _cells_to_bev(self.vtransform, cells), depth


class DynamicRigLSS(nn.Module):
    """An ``LSSTransform`` whose rig arrives with every call, as ``rig_inputs`` in the places of ``camera2ego``,
    ``camera2lidar`` and ``img_aug_matrix`` of the view transform's signature (``DYNAMIC_RIG_INPUTS``); the other
    matrices are ignored. One sample per call. The frustum entries are pooled with one ``index_add`` over the whole
    depth x feature tensor (``[N, D, fH, fW, C]``): simple to export, heavier than the fixed rig's plan."""

    def __init__(self, vtransform):
        super().__init__()
        _check_exportable(vtransform)
        self.vtransform = vtransform

    def forward(self, img, points, pixel_to_ego, lidar2ego, lidar2camera, lidar2image, camera_intrinsics,
                pixel_to_lidar, img_aug_inverse, lidar_aug_matrix, metas=None):
        """img [1, N, C_in, fH, fW] -> (BEV [1, C*Z, X/ds, Y/ds], depth probabilities [N, D, fH, fW])."""
        vt = self.vtransform
        coords = vt.voxel_coords(vt.geometry_from(img_aug_inverse.float(), pixel_to_lidar.float()))
        x, y, z = coords.unbind(-1)
        size_x, size_y, size_z = vt.grid_size
        num_cells = size_x * size_y * size_z
        inside = (x >= 0) & (x < size_x) & (y >= 0) & (y < size_y) & (z >= 0) & (z < size_z)
        # Entries outside the grid go to one extra cell, dropped after the sum.
        cell = torch.where(inside, (z * size_x + x) * size_y + y, torch.full_like(x, num_cells))
        offset = None
        if vt.depth_prior is not None:
            offset = vt.depth_prior_offset(img_aug_inverse.float(), pixel_to_ego.float())
        depth, feats = vt.get_cam_feats(img.float(), offset)
        c = feats.shape[1]
        weighted = depth.unsqueeze(-1) * feats.permute(0, 2, 3, 1).unsqueeze(1)
        cells = weighted.new_zeros(num_cells + 1, c).index_add(0, cell.reshape(-1), weighted.reshape(-1, c))
        return _cells_to_bev(vt, cells[:num_cells]), depth
