"""Loading transforms: camera images, the key-frame point cloud, LiDAR sweeps and the 3D annotations."""
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmdet3d.core.boxes import BOX_DIM
from mmdet3d.registry import TRANSFORMS

from .checks import check_bool, require

NUM_LIDAR_BEAMS = 32


def load_points_file(path, load_dim):
    """Reads a float32 ``.pcd.bin`` as ``[P, load_dim]``; a wrong size or a NaN/inf value is a one-line error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"point cloud file not found: {path}")
    # Checked in bytes: np.fromfile silently drops a trailing partial float.
    size = os.path.getsize(path)
    if size % (4 * load_dim):
        raise ValueError(f"{path}: {size} bytes is not a whole number of points of {load_dim} float32 values "
                         f"({4 * load_dim} bytes each)")
    raw = np.fromfile(path, dtype=np.float32)
    points = raw.reshape(-1, load_dim)
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(points)} points hold NaN or inf values")
    return points


def _dims(use_dim, load_dim, name):
    dims = list(range(use_dim)) if isinstance(use_dim, int) else list(use_dim)
    if not dims or not all(isinstance(d, int) and 0 <= d < load_dim for d in dims):
        raise ValueError(f"{name}: use_dim must be a count or indices within load_dim={load_dim}, got {use_dim!r}")
    return dims


def _check_unsupported(name, load_augmented, reduce_beams):
    # Painted/virtual points and beam sub-sampling are features of other BEVFusion configs, not of SimDistill's.
    if load_augmented is not None:
        raise ValueError(f"{name}: load_augmented={load_augmented!r} is not supported (only null)")
    if reduce_beams is not None and reduce_beams != NUM_LIDAR_BEAMS:
        raise ValueError(f"{name}: reduce_beams={reduce_beams!r} is not supported "
                         f"(only null or {NUM_LIDAR_BEAMS}, the sensor's beam count, which changes nothing)")


@TRANSFORMS.register_module()
class LoadMultiViewImageFromFiles:
    """Loads ``results['image_paths']`` as RGB PIL images into ``img``.

    Sets ``ori_shape`` and ``img_shape``: one ``(H, W)`` per camera. ``to_float32`` is accepted for config
    compatibility; images stay PIL until ``ImageNormalize`` turns them into a float tensor, as in BEVFusion.
    """

    def __init__(self, to_float32=False):
        self.to_float32 = check_bool("to_float32", to_float32)

    def __call__(self, results):
        paths = require(results, "image_paths", type(self).__name__)
        images = [self._read(p) for p in paths]
        results["img"] = images
        results["ori_shape"] = [(im.height, im.width) for im in images]
        results["img_shape"] = list(results["ori_shape"])
        return results

    @staticmethod
    def _read(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"camera image not found: {path}")
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from e

    def __repr__(self):
        return f"{type(self).__name__}(to_float32={self.to_float32})"


@TRANSFORMS.register_module()
class LoadPointsFromFile:
    """Loads ``results['lidar_path']`` into ``points`` (float32 ``[P, len(use_dim)]``)."""

    def __init__(self, coord_type, load_dim=6, use_dim=(0, 1, 2), reduce_beams=None, load_augmented=None):
        if coord_type != "LIDAR":
            raise ValueError(f"LoadPointsFromFile: coord_type must be 'LIDAR', got {coord_type!r}")
        _check_unsupported(type(self).__name__, load_augmented, reduce_beams)
        self.load_dim = int(load_dim)
        self.use_dim = _dims(use_dim, self.load_dim, type(self).__name__)

    def __call__(self, results):
        path = require(results, "lidar_path", type(self).__name__)
        results["points"] = np.ascontiguousarray(load_points_file(path, self.load_dim)[:, self.use_dim])
        return results

    def __repr__(self):
        return f"{type(self).__name__}(load_dim={self.load_dim}, use_dim={self.use_dim})"


@TRANSFORMS.register_module()
class LoadPointsFromMultiSweeps:
    """Appends up to ``sweeps_num`` previous LiDAR sweeps to ``points`` (BEVFusion semantics).

    Key-frame column 4 becomes 0; each sweep, after dropping points within 1 m in x and y of its sensor (if
    ``remove_close``), is moved into the key frame by ``p @ R.T + T`` and gets column 4 = Δt in seconds. With more
    sweeps than ``sweeps_num``, training draws a random subset and ``test_mode`` takes the most recent ones. With no
    sweeps and ``pad_empty_sweeps``, the key frame itself is repeated ``sweeps_num`` times, as BEVFusion does.
    """

    def __init__(self, sweeps_num=10, load_dim=5, use_dim=(0, 1, 2, 4), pad_empty_sweeps=False, remove_close=False,
                 test_mode=False, reduce_beams=None, load_augmented=None):
        name = type(self).__name__
        _check_unsupported(name, load_augmented, reduce_beams)
        if not isinstance(sweeps_num, int) or sweeps_num < 0:
            raise ValueError(f"{name}: sweeps_num must be a non-negative integer, got {sweeps_num!r}")
        self.load_dim = int(load_dim)
        if self.load_dim < 5:
            raise ValueError(f"{name}: load_dim must be >= 5 (column 4 holds the time lag), got {load_dim!r}")
        self.sweeps_num = sweeps_num
        self.use_dim = _dims(use_dim, self.load_dim, name)
        self.pad_empty_sweeps = check_bool("pad_empty_sweeps", pad_empty_sweeps)
        self.remove_close = check_bool("remove_close", remove_close)
        self.test_mode = check_bool("test_mode", test_mode)

    @staticmethod
    def _drop_close(points, radius=1.0):
        close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
        return points[~close]

    def _choose(self, num_sweeps):
        if num_sweeps <= self.sweeps_num:
            return np.arange(num_sweeps)
        if self.test_mode:
            return np.arange(self.sweeps_num)
        return np.random.choice(num_sweeps, self.sweeps_num, replace=False)

    def _load_sweep(self, sweep, key_time_us):
        for key in ("data_path", "timestamp", "sensor2lidar_rotation", "sensor2lidar_translation"):
            if key not in sweep:
                raise KeyError(f"{type(self).__name__}: a sweep has no '{key}' ({sweep.get('data_path', sweep)})")
        points = load_points_file(sweep["data_path"], self.load_dim).copy()
        if self.remove_close:
            points = self._drop_close(points)
        rot = np.asarray(sweep["sensor2lidar_rotation"], dtype=np.float64).reshape(3, 3)
        trans = np.asarray(sweep["sensor2lidar_translation"], dtype=np.float64).reshape(3)
        points[:, :3] = points[:, :3].astype(np.float64) @ rot.T + trans
        points[:, 4] = (key_time_us - sweep["timestamp"]) / 1e6
        return points

    def __call__(self, results):
        name = type(self).__name__
        points = require(results, "points", name, "LoadPointsFromFile").copy()
        if points.shape[1] != self.load_dim:
            raise ValueError(f"{name}: key-frame points have {points.shape[1]} columns, sweeps have load_dim="
                             f"{self.load_dim}; make LoadPointsFromFile keep all {self.load_dim}")
        points[:, 4] = 0
        sweeps = require(results, "sweeps", name)
        clouds = [points]
        if not sweeps and self.pad_empty_sweeps:
            pad = self._drop_close(points) if self.remove_close else points
            clouds += [pad] * self.sweeps_num
        else:
            key_time = require(results, "timestamp", name)
            clouds += [self._load_sweep(sweeps[i], key_time) for i in self._choose(len(sweeps))]
        results["points"] = np.ascontiguousarray(np.concatenate(clouds)[:, self.use_dim], dtype=np.float32)
        return results

    def __repr__(self):
        return (f"{type(self).__name__}(sweeps_num={self.sweeps_num}, use_dim={self.use_dim}, "
                f"remove_close={self.remove_close}, test_mode={self.test_mode})")


@TRANSFORMS.register_module()
class LoadAnnotations3D:
    """Copies ``ann_info`` into ``gt_bboxes_3d`` (float32 ``[M, 9]``) and ``gt_labels_3d`` (int64 ``[M]``)."""

    def __init__(self, with_bbox_3d=True, with_label_3d=True, with_attr_label=False):
        self.with_bbox_3d = check_bool("with_bbox_3d", with_bbox_3d)
        self.with_label_3d = check_bool("with_label_3d", with_label_3d)
        self.with_attr_label = check_bool("with_attr_label", with_attr_label)

    def __call__(self, results):
        name = type(self).__name__
        ann = require(results, "ann_info", name)
        if self.with_bbox_3d:
            boxes = np.asarray(require(ann, "gt_bboxes_3d", f"{name} (ann_info)"), dtype=np.float32)
            if boxes.size == 0:
                boxes = boxes.reshape(0, BOX_DIM)
            if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM:
                raise ValueError(f"{name}: ann_info['gt_bboxes_3d'] must be [M, {BOX_DIM}], got {boxes.shape}")
            if not np.isfinite(boxes).all():
                raise ValueError(f"{name}: gt_bboxes_3d of sample {results.get('token')} hold NaN or inf "
                                 "(a NaN velocity must become 0 when the dataset loads the info)")
            results["gt_bboxes_3d"] = boxes
        if self.with_label_3d:
            labels = np.asarray(require(ann, "gt_labels_3d", f"{name} (ann_info)"), dtype=np.int64).reshape(-1)
            if self.with_bbox_3d and len(labels) != len(results["gt_bboxes_3d"]):
                raise ValueError(f"{name}: {len(labels)} labels for {len(results['gt_bboxes_3d'])} boxes")
            results["gt_labels_3d"] = labels
        if self.with_attr_label:
            results["gt_attr_labels"] = np.asarray(require(ann, "attr_labels", f"{name} (ann_info)"),
                                                   dtype=np.int64).reshape(-1)
        return results

    def __repr__(self):
        return (f"{type(self).__name__}(with_bbox_3d={self.with_bbox_3d}, with_label_3d={self.with_label_3d}, "
                f"with_attr_label={self.with_attr_label})")
