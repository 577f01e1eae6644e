import pytest
import torch

from mmdet3d.core.nms import circle_nms_boxes, rotate_nms_boxes, task_nms


def boxes_at(centers, l=4.0, w=2.0, yaw=0.0):
    out = torch.zeros(len(centers), 9)
    out[:, :2] = torch.tensor(centers, dtype=torch.float32)
    out[:, 3], out[:, 4], out[:, 5], out[:, 6] = l, w, 1.5, yaw
    return out


def test_circle_nms_hand_made_set():
    # squared distances to the best box (0, 0): (2, 0) -> 4 (<= 4: suppressed), (0, 3) -> 9 (kept),
    # (1.5, 3) -> 2.25 from (0, 3) (suppressed), (-1, -1) -> 2 (suppressed), (5, 5) kept
    boxes = boxes_at([(2.0, 0.0), (0.0, 3.0), (0.0, 0.0), (1.5, 3.0), (-1.0, -1.0), (5.0, 5.0)])
    scores = torch.tensor([0.8, 0.7, 0.9, 0.65, 0.3, 0.2])
    keep = circle_nms_boxes(boxes, scores, 4.0)
    assert keep.dtype == torch.int64 and keep.tolist() == [2, 1, 5]
    assert circle_nms_boxes(boxes, scores, 4.0, post_max_size=2).tolist() == [2, 1]
    # just below 4, (2, 0) survives; it is too far from the others to suppress any
    assert circle_nms_boxes(boxes, scores, 3.99).tolist() == [2, 0, 1, 5]


def test_rotate_nms_scales_boxes_per_class():
    peds = boxes_at([(0.0, 0.0), (0.0, 0.9)], l=0.7, w=0.7)
    scores = torch.tensor([0.6, 0.8])
    labels = torch.tensor([0, 0])
    # unscaled 0.7 m boxes 0.9 m apart do not touch
    assert rotate_nms_boxes(peds, scores, 0.2).tolist() == [1, 0]
    # x 2.5 -> 1.75 m boxes: IoU = 0.85 * 1.75 / (2 * 1.75^2 - 0.85 * 1.75) = 0.32 > 0.2
    assert rotate_nms_boxes(peds, scores, 0.2, labels, [2.5, 4.0]).tolist() == [1]
    assert peds[0, 3].item() == pytest.approx(0.7)   # the caller's boxes are untouched

    cones = boxes_at([(0.0, 0.0), (1.0, 0.0)], l=0.4, w=0.4)
    # class 1 (x 4.0): 1.6 m boxes 1 m apart, IoU 0.96 / 4.16 = 0.23 > 0.2; as class 0 (x 2.5): 1 m boxes only touch
    assert rotate_nms_boxes(cones, scores, 0.2, torch.tensor([1, 1]), [2.5, 4.0]).tolist() == [1]
    assert rotate_nms_boxes(cones, scores, 0.2, torch.tensor([0, 0]), [2.5, 4.0]).tolist() == [1, 0]


def test_rotate_nms_uses_yaw_and_limits():
    crossing = torch.cat([boxes_at([(0.0, 0.0)]), boxes_at([(0.0, 0.0)], yaw=torch.pi / 2)])
    scores = torch.tensor([0.9, 0.8])
    # a 4 x 2 box and the same box turned by 90 degrees: IoU = 4 / (8 + 8 - 4) = 1/3
    assert rotate_nms_boxes(crossing, scores, 0.3).tolist() == [0]
    assert rotate_nms_boxes(crossing, scores, 0.34).tolist() == [0, 1]

    apart = boxes_at([(0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (30.0, 0.0)])
    scores = torch.tensor([0.1, 0.4, 0.3, 0.2])
    assert rotate_nms_boxes(apart, scores, 0.2, pre_max_size=2).tolist() == [1, 2]
    assert rotate_nms_boxes(apart, scores, 0.2, post_max_size=3).tolist() == [1, 2, 3]


def test_task_nms_dispatch_and_errors():
    boxes = boxes_at([(0.0, 0.0), (1.5, 0.0)])
    scores = torch.tensor([0.9, 0.8])
    labels = torch.tensor([0, 0])
    # 4 x 2 boxes 1.5 m apart: IoU 2.5 * 2 / (16 - 5) = 0.45; squared distance 2.25
    assert task_nms(boxes, scores, labels, "circle", min_radius=2.0).tolist() == [0, 1]
    assert task_nms(boxes, scores, labels, "circle", min_radius=4.0).tolist() == [0]
    assert task_nms(boxes, scores, labels, "rotate", iou_threshold=0.5).tolist() == [0, 1]
    assert task_nms(boxes, scores, labels, "rotate", iou_threshold=0.2, label_scales=[1.0]).tolist() == [0]
    empty = task_nms(torch.zeros(0, 9), torch.zeros(0), torch.zeros(0, dtype=torch.long), "rotate", iou_threshold=0.2)
    assert empty.dtype == torch.int64 and empty.numel() == 0
    with pytest.raises(ValueError, match="nms_type"):
        task_nms(boxes, scores, labels, "square")
    with pytest.raises(ValueError, match="min_radius"):
        task_nms(boxes, scores, labels, "circle")
    with pytest.raises(ValueError, match="iou_threshold"):
        task_nms(boxes, scores, labels, "rotate")
    with pytest.raises(ValueError, match="labels"):
        rotate_nms_boxes(boxes, scores, 0.2, label_scales=[1.0])
    with pytest.raises(ValueError, match="label_scales"):
        rotate_nms_boxes(boxes, scores, 0.2, torch.tensor([0, 1]), [1.0])
