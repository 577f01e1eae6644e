"""Formatting: numpy results -> tensors, and the per-sample dict the model and ``collate`` consume
(``docs/conventions.md``)."""
import numpy as np
import torch

from mmdet3d.core.boxes import BOX_DIM
from mmdet3d.registry import TRANSFORMS

from .checks import check_classes, require

MATRIX_KEYS = ("camera_intrinsics", "camera2ego", "lidar2ego", "lidar2camera", "camera2lidar", "lidar2image",
               "img_aug_matrix", "lidar_aug_matrix")

# Keys of the original configs that no transform of ours produces (depth_gt files, BEV map masks): Collect3D skips
# them when absent. Every other requested key must be present.
NEVER_PRODUCED = ("depth_gt", "gt_masks_bev")

META_KEYS = ("token", "sample_idx", "timestamp", "lidar_path", "image_paths", "location", "ori_shape", "img_shape",
             "lidar2ego", "ego2global")


@TRANSFORMS.register_module()
class DefaultFormatBundle3D:
    """Turns ``points``, ``gt_bboxes_3d`` and ``gt_labels_3d`` into tensors and checks the labels against
    ``classes`` (-1 = not a detection class). ``img`` must already be the tensor of ``ImageNormalize``."""

    def __init__(self, classes, with_gt=True, with_label=True):
        self.classes = check_classes(classes)
        self.with_gt, self.with_label = bool(with_gt), bool(with_label)

    def __call__(self, results):
        name = type(self).__name__
        if "img" in results and not isinstance(results["img"], torch.Tensor):
            raise TypeError(f"{name}: 'img' is not a tensor; add ImageNormalize before it")
        if "points" in results:
            results["points"] = torch.from_numpy(np.ascontiguousarray(results["points"], dtype=np.float32))
        if self.with_gt and "gt_bboxes_3d" in results:
            boxes = np.asarray(results["gt_bboxes_3d"], dtype=np.float32).reshape(-1, BOX_DIM)
            results["gt_bboxes_3d"] = torch.from_numpy(np.ascontiguousarray(boxes))
        if self.with_label and "gt_labels_3d" in results:
            labels = np.asarray(results["gt_labels_3d"], dtype=np.int64).reshape(-1)
            if labels.size and (labels.min() < -1 or labels.max() >= len(self.classes)):
                raise ValueError(f"{name}: gt_labels_3d outside [-1, {len(self.classes)}): {np.unique(labels)}")
            results["gt_labels_3d"] = torch.from_numpy(labels)
        return results

    def __repr__(self):
        return f"{type(self).__name__}(classes={self.classes})"


@TRANSFORMS.register_module()
class Collect3D:
    """Picks the model inputs: ``keys`` as they are, ``meta_keys`` (the calibration/augmentation matrices) as
    float32 tensors, and ``metas``, a plain dict of ``meta_lis_keys`` found in the results (token, paths,
    timestamps, ``lidar2ego``, ``ego2global``, ...). A missing key is an error, except ``depth_gt`` and
    ``gt_masks_bev``, which no transform of this project produces and which are skipped."""

    def __init__(self, keys, meta_keys=MATRIX_KEYS, meta_lis_keys=META_KEYS):
        if isinstance(keys, str) or isinstance(meta_keys, str) or isinstance(meta_lis_keys, str):
            raise TypeError("Collect3D: keys, meta_keys and meta_lis_keys must be lists of names")
        self.keys, self.meta_keys, self.meta_lis_keys = list(keys), list(meta_keys), list(meta_lis_keys)

    def __call__(self, results):
        name = type(self).__name__
        data = {}
        for key in self.keys:
            if key in self.meta_keys or (key in NEVER_PRODUCED and key not in results):
                continue
            data[key] = require(results, key, name)
        for key in self.meta_keys:
            value = np.asarray(require(results, key, name), dtype=np.float32)
            data[key] = torch.from_numpy(np.ascontiguousarray(value))
        data["metas"] = {k: results[k] for k in self.meta_lis_keys if k in results}
        return data

    def __repr__(self):
        return f"{type(self).__name__}(keys={self.keys}, meta_keys={self.meta_keys})"
