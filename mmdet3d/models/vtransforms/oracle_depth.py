"""LSS with the LiDAR depth as its depth distribution: an analysis tool, not a detector to deploy.

It bounds what the camera path (image features -> lift -> BEV decoder -> head) can reach when depth is perfect,
so that a weak camera-only model can be attributed to depth estimation or to the rest of the path.
"""
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.registry import MODELS

from .base import BaseTransform, make_downsample
from .depth_lss import lidar_depth_image
from .lss import _check_features

__all__ = ["OracleDepthLSSTransform", "one_hot_depth"]


def one_hot_depth(depth_img, feature_size, dbound, num_bins):
    """Sparse depth [B*N, 1, H, W] (0 = no point) -> one-hot depth bins [B*N, D, fH, fW].

    Each feature pixel takes the nearest LiDAR depth among the image pixels of its cell; a feature pixel with no
    point, or a depth outside ``dbound``, gets an all-zero distribution (it lifts nothing).
    """
    feat_h, feat_w = feature_size
    img_h, img_w = depth_img.shape[-2:]
    if img_h % feat_h or img_w % feat_w:
        raise ValueError(f"one_hot_depth: image size {[img_h, img_w]} is not a multiple of feature size "
                         f"{list(feature_size)}")
    inf = torch.full_like(depth_img, float("inf"))
    nearest = -F.max_pool2d(-torch.where(depth_img > 0, depth_img, inf), (img_h // feat_h, img_w // feat_w))
    lo, _, step = dbound
    bins = torch.floor((nearest[:, 0] - lo) / step)
    valid = torch.isfinite(bins) & (bins >= 0) & (bins < num_bins)
    index = torch.where(valid, bins, torch.zeros_like(bins)).long()
    return F.one_hot(index, num_bins).permute(0, 3, 1, 2).to(depth_img.dtype) * valid[:, None]


@MODELS.register_module()
class OracleDepthLSSTransform(BaseTransform):
    """Context features from a 1x1 conv (as ``LSSTransform``), lifted at the LiDAR depth of each feature cell
    (``one_hot_depth``) instead of a predicted distribution."""

    reads_points = True  # the data pipeline must load LiDAR points for it

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1, cell_rule="trunc", depth_prior=None, ground_margin=0.5,
                 pooling="depth"):
        super().__init__(in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                         cell_rule, depth_prior, ground_margin, pooling)
        if depth_prior is not None:
            raise ValueError("OracleDepthLSSTransform: depth_prior must be null (its depth is the LiDAR's)")
        self.dbound = tuple(dbound)
        self.context = nn.Conv2d(in_channels, self.C, 1)
        self.downsample = make_downsample(out_channels, downsample)

    def forward(self, img, points, camera2ego, lidar2ego, lidar2camera, lidar2image, camera_intrinsics, camera2lidar,
                img_aug_matrix, lidar_aug_matrix, metas):
        """Returns (BEV [B, C*Z, X/ds, Y/ds], one-hot depth [B*N, D, fH, fW])."""
        _check_features(img, self)
        if points is None:
            raise ValueError("OracleDepthLSSTransform: points are required (its depth is the LiDAR's)")
        with torch.autocast(device_type=img.device.type, enabled=False):
            img_aug_matrix, lidar_aug_matrix = img_aug_matrix.float(), lidar_aug_matrix.float()
            depth_img = lidar_depth_image(points, lidar2image.float(), img_aug_matrix, lidar_aug_matrix,
                                          self.image_size)
            geom = self.get_geometry(camera2lidar.float(), camera_intrinsics.float(), img_aug_matrix,
                                     lidar_aug_matrix)
            depth = one_hot_depth(depth_img.flatten(0, 1), self.feature_size, self.dbound, self.D)
            feats = self.context(img.float().flatten(0, 1))
            bev = self.downsample(self.bev_pool(geom, depth, feats))
        return bev, depth
