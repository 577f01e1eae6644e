import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from mmdet3d.ops import box_iou_bev, circle_nms, nms_bev


def polygon(box):
    x, y, l, w, yaw = box
    c, s = math.cos(yaw), math.sin(yaw)
    local = [(l / 2, w / 2), (-l / 2, w / 2), (-l / 2, -w / 2), (l / 2, -w / 2)]
    return Polygon([(x + u * c - v * s, y + u * s + v * c) for u, v in local])


def shapely_iou(a, b):
    pa, pb = polygon(a), polygon(b)
    inter = pa.intersection(pb).area
    return inter / max(pa.area + pb.area - inter, 1e-8)


def shapely_matrix(a, b):
    return torch.tensor([[shapely_iou(p, q) for q in b.tolist()] for p in a.tolist()], dtype=torch.float64)


def random_boxes(n, seed, spread=6.0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=g) * spread, torch.rand(n, 2, generator=g) * 3 + 0.2,
                      (torch.rand(n, 1, generator=g) * 2 - 1) * math.pi], 1)


SPECIAL = torch.tensor([
    [1.0, 1.0, 2.0, 1.0, 0.0],
    [1.0, 1.0, 2.0, 1.0, math.pi],           # identical, heading flipped by pi
    [1.0, 1.0, 2.0, 1.0, math.pi / 2],       # rotated by 90 degrees about the same centre
    [1.0, 1.0, 1.0, 2.0, math.pi / 2],       # the same rectangle as the first, described rotated
    [3.0, 1.0, 2.0, 1.0, 0.0],               # touching the first along an edge
    [2.0, 2.0, 2.0, 2.0, 0.0],               # touching the first at a corner region
    [1.2, 0.9, 0.5, 0.3, 0.4],               # contained in the first
    [1.0, 1.0, 4.0, 4.0, math.pi / 4],       # containing the first
    [2.5, 1.0, 2.0, 1.0, math.pi / 2],       # crossing
    [40.0, -30.0, 2.0, 1.0, 0.3],            # far away
    [40.0, -30.0, 2.0, 1.0, 0.3 + 2 * math.pi],
    [1.0, 1.0, 0.0, 1.0, 0.0],               # zero length
])


def test_special_cases_match_shapely():
    iou = box_iou_bev(SPECIAL, SPECIAL).double()
    torch.testing.assert_close(iou, shapely_matrix(SPECIAL, SPECIAL), atol=1e-6, rtol=0)
    assert iou[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert iou[0, 3] == pytest.approx(1.0, abs=1e-6)
    assert iou[0, 2] == pytest.approx(1 / 3, abs=1e-6)
    assert iou[0, 4] == pytest.approx(0.0, abs=1e-6)
    assert iou[9, 10] == pytest.approx(1.0, abs=1e-6)
    assert iou[11].abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_boxes_match_shapely(dtype):
    a = random_boxes(60, seed=0).to(dtype)
    b = torch.cat([random_boxes(50, seed=1), SPECIAL]).to(dtype)
    iou = box_iou_bev(a, b)
    assert iou.dtype == dtype and iou.shape == (60, 62)
    ref = shapely_matrix(a.double(), b.double())
    assert (ref > 0).sum() > 300  # plenty of overlapping pairs
    torch.testing.assert_close(iou.double(), ref, atol=1e-5 if dtype == torch.float32 else 1e-9, rtol=0)
    torch.testing.assert_close(box_iou_bev(b, a), iou.t())


def test_iou_far_from_origin_keeps_precision():
    boxes = torch.tensor([[1000.0, -800.0, 4.0, 2.0, 0.3], [1000.5, -800.2, 4.0, 2.0, 0.5]])
    iou = box_iou_bev(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(shapely_iou(*boxes.double().tolist()), abs=1e-5)
    assert iou.diagonal().sub(1).abs().max() < 1e-5


def brute_force_nms(boxes, scores, threshold, pre_max_size=None, post_max_size=None):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:pre_max_size]
    keep = []
    for i in order:
        if all(shapely_iou(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep[:post_max_size]


@pytest.mark.parametrize("threshold,pre,post", [(0.1, None, None), (0.5, 40, None), (0.2, None, 7), (0.0, 30, 20)])
def test_nms_matches_brute_force(threshold, pre, post):
    boxes = random_boxes(80, seed=2, spread=8.0)
    scores = torch.rand(80, generator=torch.Generator().manual_seed(3))
    keep = nms_bev(boxes, scores, threshold, pre_max_size=pre, post_max_size=post)
    assert keep.dtype == torch.long
    assert keep.tolist() == brute_force_nms(boxes.tolist(), scores.tolist(), threshold, pre, post)


def test_nms_suppresses_duplicates_and_keeps_score_order():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0, 0.0], [0.1, 0.0, 4.0, 2.0, math.pi], [10.0, 0.0, 4.0, 2.0, 0.0]])
    assert nms_bev(boxes, torch.tensor([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]
    assert nms_bev(boxes[:0], torch.zeros(0), 0.5).tolist() == []


def brute_force_circle_nms(centers, scores, min_dist_sq, post_max_size=None):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all((centers[i][0] - centers[k][0]) ** 2 + (centers[i][1] - centers[k][1]) ** 2 > min_dist_sq
               for k in keep):
            keep.append(i)
    return keep[:post_max_size]


@pytest.mark.parametrize("min_dist_sq,post", [(1.0, None), (4.0, 5), (0.0, None)])
def test_circle_nms_matches_brute_force(min_dist_sq, post):
    g = torch.Generator().manual_seed(4)
    centers = torch.rand(120, 2, generator=g) * 10
    scores = torch.rand(120, generator=g)
    keep = circle_nms(centers, scores, min_dist_sq, post)
    assert keep.tolist() == brute_force_circle_nms(centers.tolist(), scores.tolist(), min_dist_sq, post)


def test_circle_nms_threshold_is_inclusive():
    centers = torch.tensor([[0.0, 0.0], [3.0, 4.0], [-3.0, -4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert circle_nms(centers, scores, 25.0).tolist() == [0]
    assert circle_nms(centers, scores, 24.9).tolist() == [0, 1, 2]


def test_bad_inputs():
    with pytest.raises(ValueError, match="a must be"):
        box_iou_bev(torch.zeros(3, 7), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="scores"):
        nms_bev(torch.zeros(3, 5), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="centers"):
        circle_nms(torch.zeros(3, 3), torch.zeros(3), 1.0)
    assert np.isfinite(box_iou_bev(torch.zeros(1, 5), torch.zeros(1, 5)).numpy()).all()
