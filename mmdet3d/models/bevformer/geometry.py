"""BEVFormer geometry: the BEV query grid, pillar anchors, their projection into the cameras, ego-motion alignment.

The query grid is BEVFormer's: query ``q = i * bev_w + j`` with row ``i`` along y and column ``j`` along x, so the
released weights (offsets as (column, row) pairs, row/column embeddings) keep their meaning. ``bev_to_xy`` turns it
into the package's ``[B, C, X, Y]`` layout.
"""
import torch
import torch.nn.functional as F

__all__ = ["align_prev_bev", "bev_to_queries", "bev_to_xy", "frame_motion", "lidar2img", "pillar_anchors",
           "project_to_cameras", "query_reference_2d", "warp_bev"]

# Anchors behind a camera divide by ~0 and land ~1e6 image widths away. Spatial cross-attention still samples them
# (BEVFormer packs whole queries, not anchors), and such coordinates overflow float16 grids and int32 pixel indices;
# 10 image widths is as far outside as any learned offset can matter.
UV_BOUND = 10.0


def query_reference_2d(bev_h, bev_w, device=None):
    """Normalised (x, y) cell centres of the queries, [bev_h * bev_w, 2], x = (j + 0.5) / bev_w."""
    ys = (torch.arange(bev_h, dtype=torch.float32, device=device) + 0.5) / bev_h
    xs = (torch.arange(bev_w, dtype=torch.float32, device=device) + 0.5) / bev_w
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([ref_x, ref_y], -1).flatten(0, 1)


def pillar_anchors(bev_h, bev_w, pc_range, num_points_in_pillar, device=None):
    """Metric 3D anchors of each query's pillar, [bev_h * bev_w, D, 3].

    Heights are BEVFormer's: D points evenly from 0.5 m above the bottom of ``pc_range`` to 0.5 m below its top
    ({-4.5, -2.17, 0.17, 2.5} m for z in [-5, 3] and D = 4)."""
    x_min, y_min, z_min, x_max, y_max, z_max = (float(v) for v in pc_range)
    height = z_max - z_min
    ref = query_reference_2d(bev_h, bev_w, device)
    xy = torch.stack([x_min + ref[:, 0] * (x_max - x_min), y_min + ref[:, 1] * (y_max - y_min)], -1)
    zs = torch.linspace(0.5, height - 0.5, num_points_in_pillar, device=device) + z_min
    q = xy.shape[0]
    return torch.cat([xy[:, None].expand(q, num_points_in_pillar, 2),
                      zs[None, :, None].expand(q, num_points_in_pillar, 1)], -1)


def lidar2img(lidar2image, img_aug_matrix, lidar_aug_matrix):
    """Augmented LiDAR frame -> augmented image, [B, N, 4, 4], mapping (x, y, z, 1) to (u d, v d, d, 1): the BEV
    grid lives in the augmented LiDAR frame (the teacher pools augmented points), the features in the augmented
    image.

    ``img_aug_matrix`` acts on (u, v, d, 1) *after* the perspective division (the pipeline's and BEVFusion's
    convention), so the plain product ``img_aug_matrix @ lidar2image`` would divide its crop shift by the depth;
    the shift is moved to the depth column to act before the division instead."""
    pixel_aug = torch.zeros_like(img_aug_matrix)
    pixel_aug[..., :2, :2] = img_aug_matrix[..., :2, :2]
    pixel_aug[..., :2, 2] = img_aug_matrix[..., :2, 3]
    pixel_aug[..., 2, 2] = pixel_aug[..., 3, 3] = 1
    return pixel_aug @ lidar2image @ torch.inverse(lidar_aug_matrix)[:, None]


def project_to_cameras(points, lidar2img_matrix, image_size, eps=1e-5):
    """Project ``points [B, P, 3]`` through ``lidar2img_matrix [B, N, 4, 4]``.

    Returns normalised image coordinates ``[B, N, P, 2]`` (u / W, v / H of the network input ``image_size`` = (H, W),
    as BEVFormer; clamped to +-``UV_BOUND``) and the valid-view mask ``[B, N, P]``: in front of the camera and
    strictly inside the image. The pipeline's pixel j covers [j, j + 1), so u / W puts pixel centres at
    (j + 0.5) / W, the convention of ``multi_scale_deformable_attn``."""
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], -1)
    cam = torch.einsum("bnij,bpj->bnpi", lidar2img_matrix, homogeneous)
    depth = cam[..., 2:3]
    uv = cam[..., :2] / depth.clamp(min=eps)
    uv = (uv / uv.new_tensor([image_size[1], image_size[0]])).clamp(-UV_BOUND, UV_BOUND)
    valid = (depth[..., 0] > eps) & (uv > 0).all(-1) & (uv < 1).all(-1)
    return uv, valid


def bev_to_xy(queries, bev_h, bev_w):
    """``[B, bev_h * bev_w, C]`` queries (row = y) -> ``[B, C, X = bev_w, Y = bev_h]`` (dim 2 = x, DESIGN §4)."""
    return queries.view(queries.shape[0], bev_h, bev_w, -1).permute(0, 3, 2, 1)


def bev_to_queries(bev):
    """Inverse of ``bev_to_xy``: ``[B, C, X, Y]`` -> ``[B, Y * X, C]``."""
    return bev.permute(0, 3, 2, 1).flatten(1, 2)


def frame_motion(prev_ego2global, curr_ego2global, lidar2ego=None):
    """Current LiDAR frame -> previous LiDAR frame, ``[B, 4, 4]`` (float64: global translations are kilometres).

    ``lidar2ego`` ([B, 4, 4], the same for both frames of one car) defaults to the identity, i.e. ego-frame BEVs."""
    prev = prev_ego2global.double()
    curr = curr_ego2global.double()
    if lidar2ego is None:
        return torch.inverse(prev) @ curr
    l2e = lidar2ego.double()
    return torch.inverse(l2e) @ torch.inverse(prev) @ curr @ l2e


def warp_bev(bev, curr2prev, pc_range):
    """Resample a previous ``bev [B, C, X, Y]`` onto the current grid: cell centre p of the current frame reads the
    previous BEV at ``curr2prev @ p`` (planar part of ``[B, 4, 4]``, bilinear, zeros outside)."""
    nx, ny = bev.shape[2:]
    x_min, y_min, _, x_max, y_max, _ = (float(v) for v in pc_range)
    xs = x_min + (torch.arange(nx, dtype=torch.float64, device=bev.device) + 0.5) * (x_max - x_min) / nx
    ys = y_min + (torch.arange(ny, dtype=torch.float64, device=bev.device) + 0.5) * (y_max - y_min) / ny
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1)  # [X, Y, 3]
    planar = curr2prev.to(torch.float64)[:, :2][..., [0, 1, 3]]  # [B, 2, 3]: rotation about z and shift
    prev = torch.einsum("bij,xyj->bxyi", planar, pts)
    # grid_sample's last grid axis indexes the input's last dim (y), the other one dim 2 (x).
    grid = torch.stack([(prev[..., 1] - y_min) / (y_max - y_min), (prev[..., 0] - x_min) / (x_max - x_min)], -1)
    return F.grid_sample(bev, (2 * grid - 1).to(bev.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def align_prev_bev(prev_bev, prev_ego2global, curr_ego2global, pc_range, lidar2ego=None, prev_lidar_aug=None,
                   curr_lidar_aug=None):
    """The previous frame's ``[B, C, X, Y]`` BEV expressed on the current frame's grid (``frame_motion`` +
    ``warp_bev``). A BEV computed in an augmented LiDAR frame gives its ``[B, 4, 4]`` augmentation
    (``lidar_aug_matrix``, LiDAR -> augmented LiDAR) as ``prev_lidar_aug`` / ``curr_lidar_aug``."""
    if prev_bev.dim() != 4:
        raise ValueError(f"align_prev_bev: prev_bev must be [B, C, X, Y], got {list(prev_bev.shape)}")
    optional = ("lidar2ego", "prev_lidar_aug", "curr_lidar_aug")
    for name, m in (("prev_ego2global", prev_ego2global), ("curr_ego2global", curr_ego2global),
                    ("lidar2ego", lidar2ego), ("prev_lidar_aug", prev_lidar_aug), ("curr_lidar_aug", curr_lidar_aug)):
        if m is None and name not in optional:
            raise ValueError(f"align_prev_bev: {name} is missing")
        if m is not None and (m.dim() != 3 or tuple(m.shape[1:]) != (4, 4) or m.shape[0] != prev_bev.shape[0]):
            raise ValueError(f"align_prev_bev: {name} must be [{prev_bev.shape[0]}, 4, 4], got {list(m.shape)}")
    curr2prev = frame_motion(prev_ego2global, curr_ego2global, lidar2ego)
    if curr_lidar_aug is not None:
        curr2prev = curr2prev @ torch.inverse(curr_lidar_aug.double())
    if prev_lidar_aug is not None:
        curr2prev = prev_lidar_aug.double() @ curr2prev
    return warp_bev(prev_bev, curr2prev, pc_range)
