"""Heading errors of matched detections, against hand-made boxes."""
import math

import numpy as np
import pytest

from mmdet3d.analysis.heading import heading_errors, summarize_heading_errors


def box(x, y, yaw):
    return [x, y, 0.0, 4.0, 2.0, 1.5, yaw]


def test_heading_errors_match_by_class_and_distance_and_wrap_the_angle():
    gt = np.array([box(0, 0, 0.1), box(10, 0, 3.0), box(20, 0, 0.0), box(30, 0, 1.0)])
    gt_labels = np.array([0, 0, 0, 1])
    pred = np.array([box(0.5, 0, 0.2), box(10, 0.3, -3.0), box(20, 0, 1.0), box(30, 0, 1.0)])
    pred_labels = np.array([0, 0, 0, 0])  # the last prediction has another class than its box
    labels, errors = heading_errors(pred, pred_labels, gt, gt_labels, max_distance=1.0)
    assert labels.tolist() == [0, 0, 0]
    # 3.0 vs -3.0 are 2 pi - 6 = 0.283 rad apart, not 6
    np.testing.assert_allclose(errors, [0.1, 2 * math.pi - 6.0, 1.0], atol=1e-9)
    labels, _ = heading_errors(pred, pred_labels, gt, gt_labels, max_distance=0.4)
    assert labels.tolist() == [0, 0]  # the 0.5 m match is dropped


def test_summary_splits_right_flipped_and_off_axis():
    labels = np.array([0, 0, 0, 0, 2])
    errors = np.array([0.1, math.pi - 0.05, 1.5, 0.2, 3.0])
    summary = summarize_heading_errors(labels, errors, ["car", "truck", "bus"])
    assert set(summary) == {"car", "bus", "all"}
    assert summary["car"] == {"matched": 4, "right": 0.5, "flipped": 0.25, "off_axis": 0.25,
                              "mean_rad": pytest.approx((0.1 + math.pi - 0.05 + 1.5 + 0.2) / 4)}
    assert summary["bus"]["flipped"] == 1.0 and summary["all"]["matched"] == 5
    assert summarize_heading_errors(np.array([], int), np.array([]), ["car"]) == {}
