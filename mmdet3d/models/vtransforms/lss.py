"""Lift-Splat-Shoot view transform from image features alone (BEVFusion's camera-only ``LSSTransform``)."""
import torch

from mmdet3d.registry import MODELS

from .base import BaseTransform, make_depthnet, make_downsample

__all__ = ["LSSTransform"]


@MODELS.register_module()
class LSSTransform(BaseTransform):
    """A ``depthnet`` predicts D depth logits and C context channels per feature pixel; their outer product is
    pooled into BEV and downsampled by ``downsample``.

    ``depthnet_convs=0`` makes it BEVFusion's single 1x1 conv; ``depthnet_convs=2`` gives it the layout of
    ``DepthLSSTransform``'s depth net (two conv3x3 + BN + ReLU, then 1x1), i.e. SimDistill's student depth net with
    its LiDAR input removed. On small features the 1x1 conv cannot see far enough to tell depth (README, learnability
    study), hence the option.
    """

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1, cell_rule="trunc", depthnet_convs=0, depth_prior=None, ground_margin=0.5,
                 pooling="depth"):
        super().__init__(in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                         cell_rule, depth_prior, ground_margin, pooling)
        self.depthnet = make_depthnet(in_channels, in_channels, self.D + self.C, depthnet_convs)
        self.downsample = make_downsample(out_channels, downsample)

    def get_cam_feats(self, img, depth_offset=None):
        """img [B, N, C_in, fH, fW] -> depth probabilities [B*N, D, fH, fW], context [B*N, C, fH, fW];
        ``depth_offset`` (a depth prior's, ``prior_offset``) is added to the depth logits."""
        x = self.depthnet(img.flatten(0, 1))
        logits = x[:, :self.D] if depth_offset is None else x[:, :self.D] + depth_offset
        return logits.softmax(dim=1), x[:, self.D:self.D + self.C]

    def forward(self, img, points, camera2ego, lidar2ego, lidar2camera, lidar2image, camera_intrinsics, camera2lidar,
                img_aug_matrix, lidar_aug_matrix, metas):
        """Returns (BEV [B, C*Z, X/ds, Y/ds], depth probabilities [B*N, D, fH, fW]); ``points`` is unused."""
        _check_features(img, self)
        with torch.autocast(device_type=img.device.type, enabled=False):
            geom = self.get_geometry(camera2lidar.float(), camera_intrinsics.float(), img_aug_matrix.float(),
                                     lidar_aug_matrix.float())
            offset = self.prior_offset(camera2ego.float(), camera_intrinsics.float(), img_aug_matrix.float())
            depth, feats = self.get_cam_feats(img.float(), offset)
            bev = self.downsample(self.bev_pool(geom, depth, feats))
        return bev, depth


def _check_features(img, transform):
    want = (transform.in_channels, *transform.feature_size)
    if img.dim() != 5 or tuple(img.shape[2:]) != want:
        raise ValueError(f"{type(transform).__name__}: img features must be [B, N, {want[0]}, {want[1]}, {want[2]}], "
                         f"got {list(img.shape)}")
