"""Box conventions and the conversions at the package's edges.

Inside the package a box is a row ``(x, y, z, l, w, h, yaw, vx, vy)`` in the LiDAR frame: ``z`` is the geometric
centre, ``l`` lies along the heading, ``yaw`` is counter-clockwise from +x. Two other conventions meet us at the edges
and are converted here only:

* nuScenes: global frame, size ``(w, l, h)``, orientation quaternion ``(w, x, y, z)``;
* BEVFusion's info files and legacy heads: ``(x, y, z, w, l, h, -yaw - pi/2)``.
"""
import numpy as np
import torch
from pyquaternion import Quaternion

BOX_DIM = 9

# Unit-box corners, x along the length, y along the width: the bottom face counter-clockwise, then the top face.
_UNIT_CORNERS = np.array(
    [[0.5, 0.5, -0.5], [-0.5, 0.5, -0.5], [-0.5, -0.5, -0.5], [0.5, -0.5, -0.5],
     [0.5, 0.5, 0.5], [-0.5, 0.5, 0.5], [-0.5, -0.5, 0.5], [0.5, -0.5, 0.5]],
    dtype=np.float64,
)


def limit_period(angle, offset=0.5, period=2 * np.pi):
    """Wraps ``angle`` into ``[-offset * period, (1 - offset) * period)``."""
    return angle - np.floor(angle / period + offset) * period


def box_corners(boxes):
    """Corners ``[N, 8, 3]`` of boxes ``[N, >=7]`` (numpy or torch, same type out)."""
    is_torch = isinstance(boxes, torch.Tensor)
    b = boxes.detach().cpu().double().numpy() if is_torch else np.asarray(boxes, dtype=np.float64)
    b = b.reshape(-1, b.shape[-1])
    local = _UNIT_CORNERS[None] * b[:, None, 3:6]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    rot = np.stack([np.stack([c, -s, np.zeros_like(c)], -1),
                    np.stack([s, c, np.zeros_like(c)], -1),
                    np.stack([np.zeros_like(c), np.zeros_like(c), np.ones_like(c)], -1)], 1)
    corners = np.einsum("nij,nkj->nki", rot, local) + b[:, None, :3]
    if is_torch:
        return torch.from_numpy(corners).to(dtype=boxes.dtype, device=boxes.device)
    return corners


def legacy_to_boxes(legacy, velocity=None):
    """BEVFusion info/legacy-head boxes ``[N, 7]`` ``(x, y, z, w, l, h, -yaw - pi/2)`` (+ velocity ``[N, 2]``)
    to ours ``[N, 9]``. NaN velocities (objects seen once) become 0, as BEVFusion's loader does."""
    legacy = np.asarray(legacy, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((legacy.shape[0], BOX_DIM), dtype=np.float64)
    out[:, :3] = legacy[:, :3]
    out[:, 3] = legacy[:, 4]
    out[:, 4] = legacy[:, 3]
    out[:, 5] = legacy[:, 5]
    out[:, 6] = limit_period(-legacy[:, 6] - np.pi / 2)
    if velocity is not None:
        out[:, 7:9] = np.nan_to_num(np.asarray(velocity, dtype=np.float64).reshape(-1, 2), nan=0.0)
    return out


def boxes_to_legacy(boxes):
    """Ours ``[N, >=7]`` to BEVFusion's ``[N, 7]`` ``(x, y, z, w, l, h, -yaw - pi/2)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1])
    out = np.empty((boxes.shape[0], 7), dtype=np.float64)
    out[:, :3] = boxes[:, :3]
    out[:, 3] = boxes[:, 4]
    out[:, 4] = boxes[:, 3]
    out[:, 5] = boxes[:, 5]
    out[:, 6] = limit_period(-boxes[:, 6] - np.pi / 2)
    return out


def transform_matrix(translation, rotation_wxyz):
    """4x4 homogeneous matrix from a translation and a ``(w, x, y, z)`` quaternion (nuScenes' pose records)."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(rotation_wxyz).rotation_matrix
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def lidar_boxes_to_global(boxes, lidar2global):
    """Our LiDAR boxes ``[N, 9]`` to nuScenes global records.

    Returns a list of dicts with ``translation`` (3), ``size`` (w, l, h), ``rotation`` (w, x, y, z) and ``velocity``
    (vx, vy), all in the global frame; velocity is rotated, not translated.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    rot = np.asarray(lidar2global, dtype=np.float64)[:3, :3]
    trans = np.asarray(lidar2global, dtype=np.float64)[:3, 3]
    frame_q = Quaternion(matrix=rot, rtol=1e-5, atol=1e-5)
    records = []
    for b in boxes:
        q = frame_q * Quaternion(axis=[0, 0, 1], radians=float(b[6]))
        vel = rot @ np.array([b[7], b[8], 0.0])
        records.append({
            "translation": (rot @ b[:3] + trans).tolist(),
            "size": [float(b[4]), float(b[3]), float(b[5])],
            "rotation": list(q.elements),
            "velocity": vel[:2].tolist(),
        })
    return records


def global_to_lidar_boxes(translations, sizes_wlh, rotations_wxyz, velocities, global2lidar):
    """nuScenes global annotations to our LiDAR boxes ``[N, 9]``. ``velocities`` are global ``(vx, vy)``."""
    g2l = np.asarray(global2lidar, dtype=np.float64)
    rot, trans = g2l[:3, :3], g2l[:3, 3]
    n = len(translations)
    out = np.zeros((n, BOX_DIM), dtype=np.float64)
    if n == 0:
        return out
    out[:, :3] = np.asarray(translations, dtype=np.float64) @ rot.T + trans
    wlh = np.asarray(sizes_wlh, dtype=np.float64).reshape(n, 3)
    out[:, 3], out[:, 4], out[:, 5] = wlh[:, 1], wlh[:, 0], wlh[:, 2]
    for i, q in enumerate(rotations_wxyz):
        heading = Quaternion(q).rotation_matrix[:, 0]
        local = rot @ heading
        out[i, 6] = np.arctan2(local[1], local[0])
    vel = np.zeros((n, 3))
    vel[:, :2] = np.asarray(velocities, dtype=np.float64).reshape(n, 2)
    out[:, 7:9] = (vel @ rot.T)[:, :2]
    return out


def points_in_boxes(points, boxes):
    """Boolean ``[P, N]``: point inside box (surface included), for points ``[P, >=3]`` and boxes ``[N, >=7]``."""
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1])
    d = pts[:, None, :] - b[None, :, :3]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s
    ly = -d[..., 0] * s + d[..., 1] * c
    return ((np.abs(lx) <= b[:, 3] / 2) & (np.abs(ly) <= b[:, 4] / 2) & (np.abs(d[..., 2]) <= b[:, 5] / 2))
