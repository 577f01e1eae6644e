"""LSS view transform whose depth net also sees a sparse LiDAR depth image (BEVFusion's ``DepthLSSTransform``)."""
import torch
from torch import nn

from mmdet3d.registry import MODELS

from .base import BaseTransform, make_depthnet, make_downsample
from .lss import _check_features

__all__ = ["DepthLSSTransform", "lidar_depth_image"]


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def lidar_depth_image(points, lidar2image, img_aug_matrix, lidar_aug_matrix, image_size):
    """Sparse depth [B, N, 1, H, W] in metres (0 = no point) of the (augmented) LiDAR ``points``.

    Each point is taken back to the un-augmented LiDAR frame, projected by ``lidar2image``, moved by the image
    augmentation and written to the pixel whose frustum coordinate is nearest (``round(u)``: the frustum puts pixel
    ``j`` at coordinate ``j``, BEVFusion's ``linspace(0, W - 1)``). Under the image transforms' PIL convention the
    pixel that shows ``u`` is ``floor(u)`` (``transforms_2d``), and BEVFusion truncates here, so this depth image is
    half a pixel off both, on average, and agrees with the frustum instead. A pixel hit by several points keeps the
    nearest depth (BEVFusion keeps an arbitrary one).
    Points behind a camera are skipped. The input points are not modified.
    """
    batch, num_cams = lidar2image.shape[:2]
    if len(points) != batch:
        raise ValueError(f"lidar_depth_image: got {len(points)} point clouds for a batch of {batch}")
    img_h, img_w = image_size
    out = []
    for b in range(batch):
        xyz = points[b][:, :3].float()
        xyz = torch.cat([xyz, torch.ones_like(xyz[:, :1])], dim=1) @ torch.inverse(lidar_aug_matrix[b]).T
        cam = torch.einsum("nij,pj->npi", lidar2image[b], xyz)
        dist = cam[..., 2]
        pix = torch.cat([cam[..., :2] / dist.clamp(min=1e-5).unsqueeze(-1), cam[..., 2:]], dim=-1)
        pix = torch.einsum("nij,npj->npi", img_aug_matrix[b], pix)
        col = torch.floor(pix[..., 0] + 0.5).long()
        row = torch.floor(pix[..., 1] + 0.5).long()
        keep = (dist > 0) & (col >= 0) & (col < img_w) & (row >= 0) & (row < img_h)
        cam_idx = torch.arange(num_cams, device=xyz.device)[:, None].expand_as(keep)
        flat = ((cam_idx * img_h + row) * img_w + col)[keep]
        depth = torch.full((num_cams * img_h * img_w,), float("inf"), device=xyz.device)
        depth.scatter_reduce_(0, flat, dist[keep], reduce="amin")
        out.append(torch.where(torch.isinf(depth), torch.zeros_like(depth), depth))
    return torch.stack(out).view(batch, num_cams, 1, img_h, img_w)


@MODELS.register_module()
class DepthLSSTransform(BaseTransform):
    """LiDAR points are rasterised into a per-camera depth image at ``image_size`` (nearest point per pixel),
    encoded by ``dtransform`` (stride 8) and concatenated before the image features into ``depthnet``.

    Module names and layer indices equal BEVFusion's (``dtransform.*``, ``depthnet.*``, ``downsample.*``).
    BEVFusion's image-plane deformable attention (SimDistill's hard-wired ``uv_deformAttn``) is not included.
    ``depthnet_convs`` (default 2, BEVFusion's) sets the number of conv3x3 layers of ``depthnet`` (``make_depthnet``).
    """

    reads_points = True  # the data pipeline must load LiDAR points for it

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1, cell_rule="trunc", depthnet_convs=2, depth_prior=None, ground_margin=0.5,
                 pooling="depth"):
        super().__init__(in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                         cell_rule, depth_prior, ground_margin, pooling)
        encoded = tuple(_conv_out(_conv_out(s, 5, 4, 2), 5, 2, 2) for s in self.image_size)
        if encoded != self.feature_size:
            raise ValueError(f"DepthLSSTransform: the depth encoder maps image_size {list(self.image_size)} to "
                             f"{list(encoded)}, but feature_size is {list(self.feature_size)} (stride 8 expected)")
        self.dtransform = nn.Sequential(
            nn.Conv2d(1, 8, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(True),
            nn.Conv2d(8, 32, 5, stride=4, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(True),
            nn.Conv2d(32, 64, 5, stride=2, padding=2),
            nn.BatchNorm2d(64),
            nn.ReLU(True),
        )
        self.depthnet = make_depthnet(in_channels + 64, in_channels, self.D + self.C, depthnet_convs)
        self.downsample = make_downsample(out_channels, downsample)

    def depth_image(self, points, lidar2image, img_aug_matrix, lidar_aug_matrix):
        """Sparse depth [B, N, 1, H, W] at ``image_size``; see ``lidar_depth_image``."""
        return lidar_depth_image(points, lidar2image, img_aug_matrix, lidar_aug_matrix, self.image_size)

    def get_cam_feats(self, img, depth_img, depth_offset=None):
        """img [B, N, C_in, fH, fW], depth_img [B, N, 1, H, W] -> depth probs [B*N, D, fH, fW], context [B*N, C, ..];
        ``depth_offset`` (a depth prior's, ``prior_offset``) is added to the depth logits."""
        d = self.dtransform(depth_img.flatten(0, 1))
        x = self.depthnet(torch.cat([d, img.flatten(0, 1)], dim=1))
        logits = x[:, :self.D] if depth_offset is None else x[:, :self.D] + depth_offset
        return logits.softmax(dim=1), x[:, self.D:self.D + self.C]

    def forward(self, img, points, camera2ego, lidar2ego, lidar2camera, lidar2image, camera_intrinsics, camera2lidar,
                img_aug_matrix, lidar_aug_matrix, metas):
        """Returns (BEV [B, C*Z, X/ds, Y/ds], depth probabilities [B*N, D, fH, fW])."""
        _check_features(img, self)
        if points is None:
            raise ValueError("DepthLSSTransform: points are required (use LSSTransform for camera-only input)")
        with torch.autocast(device_type=img.device.type, enabled=False):
            img_aug_matrix, lidar_aug_matrix = img_aug_matrix.float(), lidar_aug_matrix.float()
            depth_img = self.depth_image(points, lidar2image.float(), img_aug_matrix, lidar_aug_matrix)
            geom = self.get_geometry(camera2lidar.float(), camera_intrinsics.float(), img_aug_matrix,
                                     lidar_aug_matrix)
            offset = self.prior_offset(camera2ego.float(), camera_intrinsics.float(), img_aug_matrix)
            depth, feats = self.get_cam_feats(img.float(), depth_img, offset)
            bev = self.downsample(self.bev_pool(geom, depth, feats))
        return bev, depth
