"""LiDAR-frame transforms: global rotation/scale/translation and flips (points, boxes, ``lidar_aug_matrix``),
range and class filters, point shuffling.

Boxes are ``(x, y, z, l, w, h, yaw, vx, vy)`` numpy rows (``docs/conventions.md``). ``lidar_aug_matrix`` maps a
point of the original LiDAR frame to the augmented one: ``p_aug = A[:3, :3] p + A[:3, 3]``.
"""
import numbers

import numpy as np

from mmdet3d.core.boxes import limit_period
from mmdet3d.registry import TRANSFORMS

from .checks import check_bool, check_classes, check_point_range, check_range, require


def _transform_points(points, linear, translation):
    out = points.copy()
    out[:, :3] = points[:, :3].astype(np.float64) @ linear.T + translation
    return out


def _transform_boxes(boxes, linear, translation):
    """Boxes under ``p -> linear p + translation`` for ``linear`` = scale x (rotation about z or axis flips)."""
    out = boxes.astype(np.float64)
    out[:, :3] = out[:, :3] @ linear.T + translation
    scale = abs(np.linalg.det(linear[:2, :2])) ** 0.5
    out[:, 3:6] *= scale
    heading = np.stack([np.cos(out[:, 6]), np.sin(out[:, 6])], axis=1) @ linear[:2, :2].T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    out[:, 7:9] = out[:, 7:9] @ linear[:2, :2].T
    return out.astype(np.float32)


def _apply(results, linear, translation):
    if "points" in results:
        results["points"] = _transform_points(results["points"], linear, translation)
    if "gt_bboxes_3d" in results:
        results["gt_bboxes_3d"] = _transform_boxes(results["gt_bboxes_3d"], linear, translation)


@TRANSFORMS.register_module()
class GlobalRotScaleTrans:
    """Train: rotates the scene by ``θ ~ U(rot_lim)`` about z (counter-clockwise), translates by
    ``N(0, trans_lim)`` per axis, then scales by ``s ~ U(resize_lim)``: points, boxes (centre, size, yaw,
    velocity). Sets ``lidar_aug_matrix = [[s R, s t], [0, 1]]``; identity in test mode (``is_train`` false)."""

    def __init__(self, resize_lim, rot_lim, trans_lim, is_train):
        self.resize_lim = check_range("GlobalRotScaleTrans resize_lim", resize_lim, lower=1e-6)
        self.rot_lim = check_range("GlobalRotScaleTrans rot_lim", rot_lim)
        std = np.broadcast_to(np.asarray(trans_lim, dtype=np.float64), (3,)) if self._is_std(trans_lim) else None
        if std is None or (std < 0).any():
            raise ValueError(f"GlobalRotScaleTrans: trans_lim must be a std >= 0 or three of them, got {trans_lim!r}")
        self.trans_std = std.copy()
        self.is_train = check_bool("is_train", is_train)

    @staticmethod
    def _is_std(value):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True
        return isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, numbers.Real) for v in value)

    def __call__(self, results):
        transform = np.eye(4)
        if self.is_train:
            scale = np.random.uniform(*self.resize_lim)
            theta = np.random.uniform(*self.rot_lim)
            translation = np.random.normal(0.0, self.trans_std)
            c, s = np.cos(theta), np.sin(theta)
            rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            transform[:3, :3] = scale * rotation
            transform[:3, 3] = scale * translation
            _apply(results, transform[:3, :3], transform[:3, 3])
        results["lidar_aug_matrix"] = transform.astype(np.float32)
        return results

    def __repr__(self):
        return (f"{type(self).__name__}(resize_lim={self.resize_lim}, rot_lim={self.rot_lim}, "
                f"trans_std={self.trans_std.tolist()}, is_train={self.is_train})")


@TRANSFORMS.register_module()
class RandomFlip3D:
    """Flips y (p = 0.5), then x (p = 0.5): points, boxes and ``lidar_aug_matrix`` (identity if absent)."""

    def __call__(self, results):
        flip_y = bool(np.random.choice([0, 1]))
        flip_x = bool(np.random.choice([0, 1]))
        linear = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
        _apply(results, linear, np.zeros(3))
        aug = np.asarray(results.get("lidar_aug_matrix", np.eye(4)), dtype=np.float64).copy()
        aug[:3, :] = linear @ aug[:3, :]
        results["lidar_aug_matrix"] = aug.astype(np.float32)
        return results

    def __repr__(self):
        return f"{type(self).__name__}()"


@TRANSFORMS.register_module()
class PointsRangeFilter:
    """Keeps points strictly inside ``point_cloud_range`` in x, y and z."""

    def __init__(self, point_cloud_range):
        self.pcd_range = np.asarray(check_point_range(point_cloud_range))

    def __call__(self, results):
        points = require(results, "points", type(self).__name__, "LoadPointsFromFile")
        xyz = points[:, :3]
        keep = ((xyz > self.pcd_range[:3]) & (xyz < self.pcd_range[3:])).all(axis=1)
        results["points"] = points[keep]
        return results

    def __repr__(self):
        return f"{type(self).__name__}(point_cloud_range={self.pcd_range.tolist()})"


def _keep_objects(results, keep):
    results["gt_bboxes_3d"] = results["gt_bboxes_3d"][keep]
    results["gt_labels_3d"] = results["gt_labels_3d"][keep]
    if "gt_attr_labels" in results:
        results["gt_attr_labels"] = results["gt_attr_labels"][keep]


@TRANSFORMS.register_module()
class ObjectRangeFilter:
    """Keeps boxes whose centre lies strictly inside the range in x and y; wraps yaw into [-pi, pi)."""

    def __init__(self, point_cloud_range):
        self.pcd_range = np.asarray(check_point_range(point_cloud_range))

    def __call__(self, results):
        name = type(self).__name__
        boxes = require(results, "gt_bboxes_3d", name, "LoadAnnotations3D")
        require(results, "gt_labels_3d", name, "LoadAnnotations3D")
        xy = boxes[:, :2]
        keep = ((xy > self.pcd_range[:2]) & (xy < self.pcd_range[3:5])).all(axis=1)
        _keep_objects(results, keep)
        results["gt_bboxes_3d"][:, 6] = limit_period(results["gt_bboxes_3d"][:, 6], offset=0.5, period=2 * np.pi)
        return results

    def __repr__(self):
        return f"{type(self).__name__}(point_cloud_range={self.pcd_range.tolist()})"


@TRANSFORMS.register_module()
class ObjectNameFilter:
    """Keeps objects whose label is one of ``classes`` (drops label -1)."""

    def __init__(self, classes):
        self.classes = check_classes(classes)

    def __call__(self, results):
        name = type(self).__name__
        require(results, "gt_bboxes_3d", name, "LoadAnnotations3D")
        labels = require(results, "gt_labels_3d", name, "LoadAnnotations3D")
        _keep_objects(results, (labels >= 0) & (labels < len(self.classes)))
        return results

    def __repr__(self):
        return f"{type(self).__name__}(classes={self.classes})"


@TRANSFORMS.register_module()
class PointShuffle:
    """Randomly permutes the points."""

    def __call__(self, results):
        points = require(results, "points", type(self).__name__, "LoadPointsFromFile")
        results["points"] = points[np.random.permutation(len(points))]
        return results

    def __repr__(self):
        return f"{type(self).__name__}()"
