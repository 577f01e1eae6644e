"""Lift-splat geometry shared by the camera-to-BEV view transforms.

A frustum of (image column, image row, depth) points on the feature grid is mapped into the (augmented) LiDAR frame
through the inverse image augmentation, the inverse intrinsics, camera-to-LiDAR and the LiDAR augmentation; features
weighted by a per-pixel depth distribution are then summed per BEV cell by ``bev_pool_depth``.
"""
import math

import torch
from torch import nn

from mmdet3d.ops import bev_cells, bev_pool_depth
from mmdet3d.ops.bev_pool import CELL_RULES, bev_pool_outer_product

__all__ = ["BaseTransform", "make_depthnet", "make_downsample"]

DEPTH_PRIORS = (None, "above_ground")
POOLINGS = ("depth", "outer_product")
BELOW_GROUND_LOGIT = -30.0  # exp(-30) ~ 1e-13: no mass, but no NaN where every bin is ruled out


def _num_cells(bound, name):
    lo, hi, step = bound
    count = (hi - lo) / step
    if step <= 0 or abs(count - round(count)) > 1e-6 or round(count) < 1:
        raise ValueError(f"{name} {list(bound)}: (max - min) / step must be a positive integer")
    return int(round(count))


def make_depthnet(in_channels, hidden_channels, out_channels, convs):
    """``convs`` conv3x3 + BN + ReLU layers (the first from ``in_channels``, then ``hidden_channels`` wide) and a 1x1
    conv to ``out_channels``; with ``convs=0`` a single 1x1 conv (BEVFusion's ``LSSTransform``), with 2 the layout
    of ``DepthLSSTransform``'s depth net (layer indices 0, 1, 3, 4, 6)."""
    if convs < 0:
        raise ValueError(f"depthnet_convs must be >= 0, got {convs}")
    if convs == 0:
        return nn.Conv2d(in_channels, out_channels, 1)
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else hidden_channels, hidden_channels, 3, padding=1),
                   nn.BatchNorm2d(hidden_channels), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.Conv2d(hidden_channels, out_channels, 1))


def make_downsample(channels, factor):
    """BEVFusion's BEV downsample: conv3x3, conv3x3 with stride ``factor``, conv3x3 (no bias, BN + ReLU each)."""
    if factor == 1:
        return nn.Identity()
    layers = []
    for stride in (1, factor, 1):
        layers += [nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(True)]
    return nn.Sequential(*layers)


class BaseTransform(nn.Module):
    """Frustum, geometry and BEV pooling; subclasses provide ``get_cam_feats`` and ``forward``.

    ``image_size``/``feature_size`` are (H, W). ``xbound``/``ybound``/``zbound`` = (min, max, step) of the BEV grid
    in metres, ``dbound`` = (min, max, step) of the depth bins. The pooled map is [B, out_channels * Z, X, Y].
    ``cell_rule`` assigns frustum points to cells: ``"trunc"`` (BEVFusion's, the default: a point up to one cell
    below a grid bound is kept in the first cell) or ``"floor"`` (only points inside the grid); see ``bev_cells``.

    ``depth_prior="above_ground"`` rules out the depth bins whose frustum point lies more than ``ground_margin``
    metres below the ego frame's ground plane (z = 0): a camera-only geometric prior (flat ground, calibration
    only), added to the depth logits (``prior_offset``). ``None`` (the default) is BEVFusion's transform.

    ``pooling="depth"`` (the default) sums depth x feature per cell without building their product
    (``bev_pool_depth``); ``"outer_product"`` is BEVFusion's path, which materialises the [B*N, D, fH, fW, C] product
    and pools its rows (``bev_pool_outer_product``): the same map, kept to measure what the default saves.
    """

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 cell_rule="trunc", depth_prior=None, ground_margin=0.5, pooling="depth"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"{type(self).__name__}: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if cell_rule not in CELL_RULES:
            raise ValueError(f"{type(self).__name__}: cell_rule must be one of {CELL_RULES}, got {cell_rule!r}")
        if depth_prior not in DEPTH_PRIORS:
            raise ValueError(f"{type(self).__name__}: depth_prior must be one of {DEPTH_PRIORS}, got {depth_prior!r}")
        self.depth_prior = depth_prior
        self.ground_margin = float(ground_margin)
        self.cell_rule = cell_rule
        self.in_channels = in_channels
        self.C = out_channels
        self.image_size = tuple(image_size)
        self.feature_size = tuple(feature_size)
        self.grid_size = tuple(_num_cells(b, n) for b, n in ((xbound, "xbound"), (ybound, "ybound"),
                                                              (zbound, "zbound")))
        self.register_buffer("grid_lower", torch.tensor([xbound[0], ybound[0], zbound[0]], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("grid_step", torch.tensor([xbound[2], ybound[2], zbound[2]], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("frustum", self.create_frustum(dbound), persistent=False)
        self.D = self.frustum.shape[0]

    def create_frustum(self, dbound):
        """[D, fH, fW, 3] of (image column, image row, depth); feature pixels span image coordinates 0..W-1 (BEVFusion's
        ``linspace``; under the PIL convention of ``transforms_2d`` pixel centres lie at ``j + 0.5``)."""
        img_h, img_w = self.image_size
        feat_h, feat_w = self.feature_size
        lo, hi, step = dbound
        if step <= 0 or hi <= lo:
            raise ValueError(f"dbound {list(dbound)}: need min < max and step > 0")
        num_d = math.ceil((hi - lo) / step - 1e-9)
        ds = (lo + step * torch.arange(num_d, dtype=torch.float64)).float()
        xs = torch.linspace(0, img_w - 1, feat_w)
        ys = torch.linspace(0, img_h - 1, feat_h)
        d, y, x = torch.meshgrid(ds, ys, xs, indexing="ij")
        return torch.stack([x, y, d], dim=-1)

    def get_geometry(self, camera2lidar, camera_intrinsics, img_aug_matrix, lidar_aug_matrix):
        """Frustum points in the augmented LiDAR frame, [B, N, D, fH, fW, 3].

        camera2lidar, camera_intrinsics, img_aug_matrix: [B, N, 4, 4]; lidar_aug_matrix: [B, 4, 4].
        """
        _check_matrix(camera2lidar, "camera2lidar", 4)
        _check_matrix(camera_intrinsics, "camera_intrinsics", 4)
        _check_matrix(img_aug_matrix, "img_aug_matrix", 4)
        _check_matrix(lidar_aug_matrix, "lidar_aug_matrix", 3)
        return self.geometry_from(torch.inverse(img_aug_matrix),
                                  lidar_aug_matrix[:, None] @ camera2lidar @ torch.inverse(camera_intrinsics))

    def geometry_from(self, img_aug_inverse, pixel_to_frame):
        """Frustum points [B, N, D, fH, fW, 3] from the inverse image augmentation and the map of (u d, v d, d, 1)
        in the un-augmented image to the target frame, both [B, N, 4, 4] (no matrix inverse: exportable)."""
        frustum = self.frustum.to(pixel_to_frame.dtype)
        ones = torch.ones_like(frustum[..., :1])
        pix = torch.einsum("bnij,dhwj->bndhwi", img_aug_inverse, torch.cat([frustum, ones], -1))
        depth = pix[..., 2:3]
        cam = torch.cat([pix[..., :2] * depth, depth, ones.expand_as(depth)], dim=-1)
        return torch.einsum("bnij,bndhwj->bndhwi", pixel_to_frame[..., :3, :], cam)

    def prior_offset(self, camera2ego, camera_intrinsics, img_aug_matrix):
        """``depth_prior``'s offset of the depth logits [B*N, D, fH, fW] for these matrices; None without a prior."""
        if self.depth_prior is None:
            return None
        pixel_to_ego = camera2ego @ torch.inverse(camera_intrinsics)
        return self.depth_prior_offset(torch.inverse(img_aug_matrix), pixel_to_ego)

    def depth_prior_offset(self, img_aug_inverse, pixel_to_ego):
        """The prior's additive offset of the depth logits, [B*N, D, fH, fW]: ``BELOW_GROUND_LOGIT`` on ruled-out
        bins, a finite value so that a pixel whose every bin is below ground keeps a distribution."""
        height = self.geometry_from(img_aug_inverse, pixel_to_ego)[..., 2].flatten(0, 1)
        return BELOW_GROUND_LOGIT * (height < -self.ground_margin).to(pixel_to_ego.dtype)

    def voxel_coords(self, geom):
        """Integer (x, y, z) BEV cell of each frustum point, [B*N, D, fH, fW, 3]; cells outside the grid included."""
        return bev_cells(geom, self.grid_lower, self.grid_step, self.cell_rule).flatten(0, 1)

    def bev_pool(self, geom, depth, feats):
        """Sum ``depth`` x ``feats`` per BEV cell: depth [B*N, D, fH, fW], feats [B*N, C, fH, fW] -> [B, C*Z, X, Y]."""
        pool = bev_pool_depth if self.pooling == "depth" else bev_pool_outer_product
        return pool(depth, feats, self.voxel_coords(geom), geom.shape[0], self.grid_size)


def _check_matrix(m, name, ndim):
    if m.dim() != ndim or m.shape[-2:] != (4, 4):
        want = "[B, N, 4, 4]" if ndim == 4 else "[B, 4, 4]"
        raise ValueError(f"{name} must be {want}, got {list(m.shape)}")
