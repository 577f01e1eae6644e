"""Heading errors of detections matched to the ground truth: is a model's orientation right, flipped front/back,
or off its axis altogether? The devkit's mAOE averages these apart; the split tells a missing front/back cue (errors
near pi) from an orientation not learnt (errors spread out).
"""
import math

import numpy as np

__all__ = ["FLIP_TOLERANCE", "heading_errors", "summarize_heading_errors"]

FLIP_TOLERANCE = math.pi / 4  # |error| below it is "right", above pi minus it "flipped", else "off axis"


def heading_errors(pred_boxes, pred_labels, gt_boxes, gt_labels, max_distance=1.0):
    """``(labels [K], |yaw error| [K] in [0, pi])`` of the ground-truth boxes ``[M, >=7]`` that have a prediction of
    their label with its centre within ``max_distance`` metres in BEV (the nearest one; a prediction may serve several
    boxes). Boxes are ``(x, y, z, l, w, h, yaw, ...)``."""
    pred_boxes, gt_boxes = np.asarray(pred_boxes, np.float64), np.asarray(gt_boxes, np.float64)
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    labels, errors = [], []
    for box, label in zip(gt_boxes, gt_labels):
        same = pred_labels == label
        if not same.any():
            continue
        distance = np.linalg.norm(pred_boxes[same, :2] - box[:2], axis=1)
        nearest = int(distance.argmin())
        if distance[nearest] <= max_distance:
            error = (pred_boxes[same][nearest, 6] - box[6] + math.pi) % (2 * math.pi) - math.pi
            labels.append(int(label))
            errors.append(abs(error))
    return np.asarray(labels, dtype=np.int64), np.asarray(errors, dtype=np.float64)


def summarize_heading_errors(labels, errors, class_names):
    """``{class: {matched, right, flipped, off_axis, mean_rad}}`` (fractions of the matched boxes) and ``"all"``."""
    def stats(e):
        return {"matched": int(len(e)), "right": float(np.mean(e < FLIP_TOLERANCE)),
                "flipped": float(np.mean(e > math.pi - FLIP_TOLERANCE)),
                "off_axis": float(np.mean((e >= FLIP_TOLERANCE) & (e <= math.pi - FLIP_TOLERANCE))),
                "mean_rad": float(np.mean(e))}
    out = {class_names[c]: stats(errors[labels == c]) for c in np.unique(labels)}
    if len(errors):
        out["all"] = stats(errors)
    return out
