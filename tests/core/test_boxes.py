"""Box conventions checked on the real nuScenes frame against the devkit's own geometry."""
import json
import os

import numpy as np
import pytest
import torch
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from mmdet3d.core.boxes import (box_corners, boxes_to_legacy, global_to_lidar_boxes, legacy_to_boxes,
                                lidar_boxes_to_global, limit_period, points_in_boxes)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


@pytest.fixture(scope="module")
def sample():
    with open(os.path.join(DATA, "sample.json")) as f:
        meta = json.load(f)
    points = np.fromfile(os.path.join(DATA, meta["lidar"]["file"]), dtype=np.float32).reshape(-1, 5)
    boxes = np.array([b["center"] + b["size_lwh"] + [b["yaw"]] + b["velocity"] for b in meta["boxes"]])
    return meta, points, boxes


def devkit_box(row):
    """The same box built the devkit's way: size (w, l, h), orientation a rotation about z."""
    return Box(row[:3], [row[4], row[3], row[5]], Quaternion(axis=[0, 0, 1], radians=row[6]))


def test_corners_match_devkit_on_the_69_real_boxes(sample):
    _, _, boxes = sample
    assert len(boxes) == 69
    ours = box_corners(boxes)
    for row, corners in zip(boxes, ours):
        expected = devkit_box(row).corners().T  # [8, 3]
        # Same point set; order conventions differ, so match each of ours to its nearest devkit corner.
        d = np.linalg.norm(corners[:, None] - expected[None], axis=-1)
        assert d.min(1).max() < 1e-9
        assert sorted(d.argmin(1).tolist()) == list(range(8))


def test_corners_torch_input_keeps_type():
    box = torch.tensor([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, np.pi / 2, 0, 0]])
    corners = box_corners(box)
    assert isinstance(corners, torch.Tensor) and corners.shape == (1, 8, 3)
    # yaw = 90 deg: the 4 m length lies along +y.
    assert corners[0, :, 1].max() - corners[0, :, 1].min() == pytest.approx(4.0, abs=1e-6)
    assert corners[0, :, 0].max() - corners[0, :, 0].min() == pytest.approx(2.0, abs=1e-6)


def test_points_in_boxes_equals_devkit_count(sample):
    _, points, boxes = sample
    ours = points_in_boxes(points, boxes).sum(0)
    devkit = np.array([points_in_box(devkit_box(b), points[:, :3].T).sum() for b in boxes])
    np.testing.assert_array_equal(ours, devkit)
    annotated = np.array([b["num_lidar_pts"] for b in sample[0]["boxes"]])
    # Annotations count the full sweep set: the key frame alone comes close (README of the sample: 29 of 1009).
    assert np.abs(ours - annotated).sum() <= 0.05 * annotated.sum()


def test_legacy_round_trip_and_formula():
    rng = np.random.RandomState(0)
    ours = np.concatenate([rng.uniform(-50, 50, (20, 3)), rng.uniform(0.5, 10, (20, 3)),
                           rng.uniform(-np.pi, np.pi, (20, 1)), rng.normal(size=(20, 2))], 1)
    legacy = boxes_to_legacy(ours)
    np.testing.assert_allclose(legacy[:, 3], ours[:, 4])  # w first
    np.testing.assert_allclose(legacy[:, 4], ours[:, 3])
    np.testing.assert_allclose(limit_period(legacy[:, 6] + ours[:, 6] + np.pi / 2), 0, atol=1e-12)
    back = legacy_to_boxes(legacy, ours[:, 7:9])
    np.testing.assert_allclose(back[:, :6], ours[:, :6])
    np.testing.assert_allclose(limit_period(back[:, 6] - ours[:, 6]), 0, atol=1e-12)
    np.testing.assert_allclose(back[:, 7:], ours[:, 7:])


def test_legacy_nan_velocity_becomes_zero():
    out = legacy_to_boxes(np.zeros((1, 7)), np.array([[np.nan, np.nan]]))
    assert np.all(out[:, 7:] == 0)


def test_global_conversion_matches_devkit_transforms(sample):
    meta, _, boxes = sample
    lidar2global = np.asarray(meta["ego2global"]) @ np.asarray(meta["lidar"]["lidar2ego"])
    records = lidar_boxes_to_global(boxes, lidar2global)
    for row, rec in zip(boxes, records):
        box = devkit_box(row)
        box.velocity = np.array([row[7], row[8], 0.0])
        box.rotate(Quaternion(matrix=lidar2global[:3, :3], rtol=1e-5, atol=1e-5))
        box.translate(lidar2global[:3, 3])
        np.testing.assert_allclose(rec["translation"], box.center, atol=1e-6)
        np.testing.assert_allclose(rec["size"], box.wlh, atol=1e-9)
        np.testing.assert_allclose(Box([0, 0, 0], [1, 1, 1], Quaternion(rec["rotation"])).corners(),
                                   Box([0, 0, 0], [1, 1, 1], box.orientation).corners(), atol=1e-6)
        np.testing.assert_allclose(rec["velocity"], box.velocity[:2], atol=1e-6)
    back = global_to_lidar_boxes([r["translation"] for r in records], [r["size"] for r in records],
                                 [r["rotation"] for r in records], [r["velocity"] for r in records],
                                 np.linalg.inv(lidar2global))
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-6)
    np.testing.assert_allclose(limit_period(back[:, 6] - boxes[:, 6]), 0, atol=1e-6)
    # nuScenes velocities are 2D in the global frame: the ego's slight pitch/roll makes the round trip approximate.
    known = np.isfinite(boxes[:, 7]).nonzero()[0]  # objects annotated once have no velocity (NaN)
    assert len(known) > 50
    speed = np.linalg.norm(boxes[known, 7:], axis=1)
    assert np.all(np.linalg.norm(back[known, 7:] - boxes[known, 7:], axis=1) <= 0.03 * speed + 1e-9)


def test_velocity_round_trip_exact_for_a_level_frame(sample):
    _, _, boxes = sample
    frame = np.eye(4)
    frame[:3, :3] = Quaternion(axis=[0, 0, 1], radians=0.7).rotation_matrix
    frame[:3, 3] = [100.0, -20.0, 1.5]
    records = lidar_boxes_to_global(boxes, frame)
    back = global_to_lidar_boxes([r["translation"] for r in records], [r["size"] for r in records],
                                 [r["rotation"] for r in records], [r["velocity"] for r in records],
                                 np.linalg.inv(frame))
    np.testing.assert_allclose(back[:, 7:], boxes[:, 7:], atol=1e-9, equal_nan=True)
