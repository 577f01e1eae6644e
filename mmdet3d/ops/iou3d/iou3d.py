"""Rotated BEV IoU of ``(x, y, l, w, yaw)`` boxes, greedy rotated NMS and circle NMS.

The overlap of two rectangles is their intersection polygon, which is the convex hull of the corners of each box
that lie inside the other plus the crossings of their edges; the PyTorch path collects these candidates for many
pairs at once, orders them by angle and applies the shoelace formula. The CUDA kernel clips one rectangle by the
other (Sutherland-Hodgman) per pair. Both are exact up to rounding.
"""
import math

import numpy as np
import torch

from ..common import cuda_kernels

__all__ = ["box_iou_bev", "nms_bev", "circle_nms", "bev_corners"]

# Pairs evaluated together by the PyTorch path: bounds its temporaries to ~100 MB.
_PAIR_CHUNK = 1 << 16
_AREA_EPS = 1e-8


def _check_boxes(name, boxes):
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a [N, 5] tensor of (x, y, l, w, yaw) boxes, got {shape}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {boxes.dtype}")


def bev_corners(boxes):
    """Corners ``[N, 4, 2]`` of ``(x, y, l, w, yaw)`` boxes, counter-clockwise."""
    half = boxes[:, None, 2:4] * boxes.new_tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    cos, sin = torch.cos(boxes[:, 4])[:, None], torch.sin(boxes[:, 4])[:, None]
    x = half[..., 0] * cos - half[..., 1] * sin
    y = half[..., 0] * sin + half[..., 1] * cos
    return torch.stack([x, y], -1) + boxes[:, None, :2]


def _cross(u, v):
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _inside(points, corners, tol):
    """Whether ``points[P, K, 2]`` lie in the convex CCW quadrilaterals ``corners[P, 4, 2]`` (boundary included)."""
    edges = torch.roll(corners, -1, dims=1) - corners
    side = _cross(edges[:, None], points[:, :, None] - corners[:, None])  # [P, K, 4]
    return (side >= -tol[:, None, None]).all(-1)


def _pair_overlap(a, b):
    """Intersection areas of box pairs ``a[P, 5]``, ``b[P, 5]`` (float64, centred on ``a``)."""
    centre = a[:, :2].clone()
    a = torch.cat([a[:, :2] - centre, a[:, 2:]], 1)
    b = torch.cat([b[:, :2] - centre, b[:, 2:]], 1)
    ca, cb = bev_corners(a), bev_corners(b)
    scale = torch.maximum(a[:, 2:4].abs().amax(1), b[:, 2:4].abs().amax(1)).clamp(min=1e-6)
    tol = 1e-9 * scale * scale

    # Edge crossings: a0 + t (a1 - a0) = b0 + u (b1 - b0) for every pair of edges (4 x 4).
    a0, b0 = ca[:, :, None], cb[:, None]
    r = torch.roll(ca, -1, dims=1)[:, :, None] - a0
    s = torch.roll(cb, -1, dims=1)[:, None] - b0
    denom = _cross(r, s)
    parallel = denom.abs() <= 1e-12 * scale[:, None, None] ** 2
    denom = torch.where(parallel, torch.ones_like(denom), denom)
    t = _cross(b0 - a0, s) / denom
    u = _cross(b0 - a0, r) / denom
    crossing_ok = ~parallel & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = (a0 + t[..., None] * r).flatten(1, 2)

    points = torch.cat([ca, cb, crossings], 1)  # [P, 24, 2]
    valid = torch.cat([_inside(ca, cb, tol), _inside(cb, ca, tol), crossing_ok.flatten(1)], 1)

    count = valid.sum(1, keepdim=True)
    centroid = (points * valid[..., None]).sum(1) / count.clamp(min=1)
    rel = points - centroid[:, None]
    angle = torch.where(valid, torch.atan2(rel[..., 1], rel[..., 0]), torch.full_like(rel[..., 0], 4.0))
    order = torch.argsort(angle, dim=1)
    rel = torch.gather(rel, 1, order[..., None].expand(-1, -1, 2))
    ordered_valid = torch.gather(valid, 1, order)
    # Invalid slots (sorted last) repeat the first vertex: they add zero-length edges, so the shoelace sum
    # closes the polygon correctly.
    rel = torch.where(ordered_valid[..., None], rel, rel[:, :1])
    area = 0.5 * _cross(rel, torch.roll(rel, -1, dims=1)).sum(1)
    return torch.where(count.squeeze(1) >= 3, area.abs(), torch.zeros_like(area))


def _box_iou_bev_torch(a, b):
    a64, b64 = a.double(), b.double()
    area_a = (a64[:, 2] * a64[:, 3]).abs()
    area_b = (b64[:, 2] * b64[:, 3]).abs()
    # Only pairs whose circumscribed circles meet can overlap.
    radius_a = 0.5 * torch.hypot(a64[:, 2], a64[:, 3])
    radius_b = 0.5 * torch.hypot(b64[:, 2], b64[:, 3])
    iou = a64.new_zeros(a.shape[0], b.shape[0])
    rows_per_chunk = max(1, _PAIR_CHUNK // max(1, b.shape[0]))
    for start in range(0, a.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        dist = torch.cdist(a64[rows, :2], b64[:, :2])
        i, j = (dist <= radius_a[rows, None] + radius_b[None]).nonzero(as_tuple=True)
        if i.numel() == 0:
            continue
        for k in range(0, i.numel(), _PAIR_CHUNK):
            ii, jj = i[k:k + _PAIR_CHUNK] + start, j[k:k + _PAIR_CHUNK]
            overlap = _pair_overlap(a64[ii], b64[jj])
            union = (area_a[ii] + area_b[jj] - overlap).clamp(min=_AREA_EPS)
            iou[ii, jj] = overlap / union
    return iou.to(torch.promote_types(a.dtype, b.dtype))


def box_iou_bev(a, b):
    """Rotated IoU ``[N, M]`` of BEV boxes ``a[N, 5]`` and ``b[M, 5]``, rows ``(x, y, l, w, yaw)``.

    IoU = overlap / max(area_a + area_b - overlap, 1e-8); zero-size boxes give 0.
    """
    _check_boxes("box_iou_bev: a", a)
    _check_boxes("box_iou_bev: b", b)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.new_zeros(a.shape[0], b.shape[0])
    ext = cuda_kernels(a, b)
    if ext is not None:
        dtype = torch.promote_types(a.dtype, b.dtype)
        dtype = dtype if dtype == torch.float64 else torch.float32
        return ext.box_iou_bev(a.to(dtype).contiguous(), b.to(dtype).contiguous()).to(
            torch.promote_types(a.dtype, b.dtype))
    return _box_iou_bev_torch(a, b)


def _greedy_keep(suppress, post_max_size):
    """Greedy selection over boxes in score order: ``suppress[i, j]`` says box ``i`` removes box ``j``.

    Iterates over the kept boxes only.
    """
    suppress = suppress.cpu().numpy()
    n = suppress.shape[0]
    removed = np.zeros(n, dtype=bool)
    keep = []
    i = 0
    while True:
        keep.append(i)
        if post_max_size is not None and len(keep) >= post_max_size:
            break
        removed |= suppress[i]
        rest = np.flatnonzero(~removed[i + 1:])
        if rest.size == 0:
            break
        i += 1 + int(rest[0])
    return torch.as_tensor(keep, dtype=torch.long)


def _score_order(scores, name, n, pre_max_size=None):
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"{name}: scores must be [{n}], got {tuple(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    return order if pre_max_size is None else order[:int(pre_max_size)]


def nms_bev(boxes, scores, iou_threshold, pre_max_size=None, post_max_size=None):
    """Greedy rotated NMS: indices into ``boxes[N, 5]`` (LongTensor, descending score) of the kept boxes.

    The ``pre_max_size`` highest-scoring boxes take part; a box is dropped when its IoU with a kept, higher-scoring
    box exceeds ``iou_threshold``; at most ``post_max_size`` boxes are kept.
    """
    _check_boxes("nms_bev: boxes", boxes)
    order = _score_order(scores, "nms_bev", boxes.shape[0], pre_max_size)
    if order.numel() == 0 or post_max_size == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    ranked = boxes[order]
    suppress = box_iou_bev(ranked, ranked) > iou_threshold
    return order[_greedy_keep(suppress, post_max_size).to(order.device)]


def circle_nms(centers, scores, min_dist_sq, post_max_size=None):
    """Greedy NMS on BEV centres ``centers[N, 2]``: a box is dropped when its squared centre distance to a kept,
    higher-scoring box is ``<= min_dist_sq``. Returns kept indices (LongTensor, descending score)."""
    if not isinstance(centers, torch.Tensor) or centers.dim() != 2 or centers.shape[1] != 2:
        raise ValueError(f"circle_nms: centers must be a [N, 2] tensor, got "
                         f"{tuple(centers.shape) if isinstance(centers, torch.Tensor) else type(centers).__name__}")
    if not math.isfinite(float(min_dist_sq)):
        raise ValueError(f"circle_nms: min_dist_sq must be finite, got {min_dist_sq}")
    order = _score_order(scores, "circle_nms", centers.shape[0])
    if order.numel() == 0 or post_max_size == 0:
        return torch.zeros(0, dtype=torch.long, device=centers.device)
    ranked = centers[order].double()
    dist_sq = ((ranked[:, None] - ranked[None]) ** 2).sum(-1)
    return order[_greedy_keep(dist_sq <= float(min_dist_sq), post_max_size).to(order.device)]
