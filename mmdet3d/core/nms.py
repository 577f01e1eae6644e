"""Per-task NMS of CenterPoint-style heads on our 9-dim boxes ``(x, y, z, l, w, h, yaw, vx, vy)``."""
import torch

from mmdet3d.ops import circle_nms, nms_bev

__all__ = ["circle_nms_boxes", "rotate_nms_boxes", "task_nms", "NMS_TYPES"]

NMS_TYPES = ("circle", "rotate")


def circle_nms_boxes(boxes, scores, min_dist_sq, post_max_size=None):
    """Indices (score order) kept by greedy NMS on BEV centres: a box is dropped when its squared centre distance to
    a kept, higher-scoring box is ``<= min_dist_sq``."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return circle_nms(boxes[:, :2].contiguous(), scores, float(min_dist_sq), post_max_size)


def rotate_nms_boxes(boxes, scores, iou_threshold, labels=None, label_scales=None, pre_max_size=None,
                     post_max_size=None):
    """Indices (score order) kept by greedy rotated-BEV-IoU NMS (drop IoU > ``iou_threshold``).

    With ``label_scales`` (one factor per class index of ``labels``) each box's ``(l, w)`` is scaled by its class
    factor for the overlap test only, so that small objects (pedestrians, cones) whose boxes barely touch still
    suppress each other.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    bev = boxes[:, [0, 1, 3, 4, 6]].clone()
    if label_scales is not None:
        if labels is None:
            raise ValueError("rotate_nms_boxes: label_scales needs labels")
        scales = bev.new_tensor(label_scales)
        if int(labels.max()) >= scales.numel():
            raise ValueError(f"rotate_nms_boxes: {scales.numel()} label_scales for a label {int(labels.max())}")
        bev[:, 2:4] *= scales[labels.long()][:, None]
    return nms_bev(bev, scores, float(iou_threshold), pre_max_size=pre_max_size, post_max_size=post_max_size)


def task_nms(boxes, scores, labels, nms_type, *, min_radius=None, iou_threshold=None, label_scales=None,
             pre_max_size=None, post_max_size=None):
    """NMS of one task's detections: ``'circle'`` with ``min_radius`` as the squared centre distance, or
    ``'rotate'`` with ``iou_threshold`` and the per-class ``label_scales``. Returns kept indices in score order."""
    if nms_type == "circle":
        if min_radius is None:
            raise ValueError("task_nms: circle NMS needs min_radius")
        return circle_nms_boxes(boxes, scores, min_radius, post_max_size)
    if nms_type == "rotate":
        if iou_threshold is None:
            raise ValueError("task_nms: rotate NMS needs iou_threshold")
        return rotate_nms_boxes(boxes, scores, iou_threshold, labels, label_scales, pre_max_size, post_max_size)
    raise ValueError(f"task_nms: nms_type must be one of {NMS_TYPES}, got {nms_type!r}")
