"""nuScenes dataset over BEVFusion-style info files (real or generated data alike)."""
import os
import pickle

import numpy as np
import torch
from torch.utils.data import Dataset

from mmdet3d.core.boxes import legacy_to_boxes, transform_matrix
from mmdet3d.registry import DATASETS

from .pipelines import Compose

CAMERA_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


def load_infos(ann_file):
    """Reads an info pickle and checks its layout; errors name the file."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"info file not found: {ann_file} (run tools/create_data.py first)")
    try:
        with open(ann_file, "rb") as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise ValueError(f"{ann_file}: not a readable info pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or "infos" not in data:
        raise ValueError(f"{ann_file}: expected a dict with 'infos' and 'metadata'")
    return data["infos"], data.get("metadata", {})


def empty_ann_info():
    return {"gt_bboxes_3d": np.zeros((0, 9), np.float32), "gt_labels_3d": np.zeros(0, np.int64),
            "gt_names": np.zeros(0, dtype="<U1")}


@DATASETS.register_module()
class NuScenesDataset(Dataset):
    """Samples of one split, sorted by timestamp, passed through ``pipeline``.

    Args:
        dataset_root: folder that relative paths in the info file are resolved against.
        ann_file: ``nuscenes_infos_{split}.pkl``.
        pipeline: list of transform configs (or callables).
        object_classes: class names in label order; other names get label -1.
        use_valid_flag: keep GT boxes with ``valid_flag`` (LiDAR or radar points) instead of ``num_lidar_pts > 0``.
        load_interval: keep every n-th sample.
        with_prev_frame: also pass the previous key frame of the scene through ``pipeline`` and add its images and
            camera matrices as ``prev_img``, ``prev_lidar2image``, ``prev_img_aug_matrix``,
            ``prev_lidar_aug_matrix``, with ``prev_ego2global``, ``ego2global`` and ``prev_exists`` (False on a
            scene's first frame, whose ``prev_*`` then repeat the current frame's): the temporal BEVFormer
            student's input. Its annotations are not loaded; the frame is looked up among all samples of the file,
            whatever ``load_interval``.
    """

    def __init__(self, dataset_root, ann_file, pipeline, object_classes, modality=None, test_mode=False,
                 use_valid_flag=False, load_interval=1, with_prev_frame=False, map_classes=None,
                 box_type_3d="LiDAR"):
        self.dataset_root = dataset_root
        self.ann_file = ann_file
        self.object_classes = list(object_classes)
        self.modality = modality or {"use_lidar": True, "use_camera": True}
        self.test_mode = test_mode
        self.use_valid_flag = use_valid_flag
        infos, self.metadata = load_infos(ann_file)
        self.infos = sorted(infos, key=lambda i: i["timestamp"])[::load_interval]
        self.pipeline = Compose(pipeline or [])
        self.with_prev_frame = bool(with_prev_frame)
        if self.with_prev_frame:
            if any("prev" not in info for info in infos):
                raise ValueError(f"{ann_file}: with_prev_frame needs the infos' 'prev' key-frame tokens; re-run "
                                 "tools/create_data.py")
            self.infos_by_token = {info["token"]: info for info in infos}

    def __len__(self):
        return len(self.infos)

    def _path(self, path):
        if os.path.isabs(path) or os.path.exists(path):
            return path
        return os.path.join(self.dataset_root, path)

    def _box_mask(self, info):
        if self.use_valid_flag and "valid_flag" in info:
            return np.asarray(info["valid_flag"], dtype=bool)
        return np.asarray(info["num_lidar_pts"]) > 0

    def get_ann_info(self, index):
        return self._ann_info(self.infos[index])

    def _ann_info(self, info):
        if "gt_boxes" not in info:
            return empty_ann_info()
        mask = self._box_mask(info)
        names = np.asarray(info["gt_names"])[mask]
        boxes = legacy_to_boxes(np.asarray(info["gt_boxes"])[mask], np.asarray(info["gt_velocity"])[mask])
        labels = np.array([self.object_classes.index(n) if n in self.object_classes else -1 for n in names],
                          dtype=np.int64)
        return {"gt_bboxes_3d": boxes.astype(np.float32), "gt_labels_3d": labels, "gt_names": names}

    def get_cat_ids(self, index):
        """Class ids present in a sample (for class-balanced resampling)."""
        labels = self.get_ann_info(index)["gt_labels_3d"]
        return sorted(set(int(label) for label in labels if label >= 0))

    def get_data_info(self, index):
        return self._data_info(self.infos[index], self.get_ann_info(index))

    def _data_info(self, info, ann_info):
        lidar2ego = transform_matrix(info["lidar2ego_translation"], info["lidar2ego_rotation"])
        ego2global = transform_matrix(info["ego2global_translation"], info["ego2global_rotation"])
        data = {
            "token": info["token"],
            "sample_idx": info["token"],
            "timestamp": info["timestamp"],
            "lidar_path": self._path(info["lidar_path"]),
            "sweeps": [dict(s, data_path=self._path(s["data_path"])) for s in info["sweeps"]],
            "location": info.get("location", ""),
            "lidar2ego": lidar2ego.astype(np.float32),
            "ego2global": ego2global.astype(np.float32),
        }
        cams = [info["cams"][c] for c in CAMERA_ORDER if c in info["cams"]]
        if len(cams) != len(CAMERA_ORDER):
            raise ValueError(f"{self.ann_file}: sample {info['token']} lacks cameras "
                             f"{sorted(set(CAMERA_ORDER) - set(info['cams']))}")
        intrinsics, camera2ego, lidar2camera, camera2lidar, lidar2image = [], [], [], [], []
        for cam in cams:
            k = np.eye(4)
            k[:3, :3] = np.asarray(cam.get("camera_intrinsics", cam.get("cam_intrinsic")))
            c2l = np.eye(4)
            c2l[:3, :3] = cam["sensor2lidar_rotation"]
            c2l[:3, 3] = cam["sensor2lidar_translation"]
            l2c = np.linalg.inv(c2l)
            intrinsics.append(k)
            camera2ego.append(transform_matrix(cam["sensor2ego_translation"], cam["sensor2ego_rotation"]))
            camera2lidar.append(c2l)
            lidar2camera.append(l2c)
            lidar2image.append(k @ l2c)
        data.update({
            "image_paths": [self._path(c["data_path"]) for c in cams],
            "camera_intrinsics": np.stack(intrinsics).astype(np.float32),
            "camera2ego": np.stack(camera2ego).astype(np.float32),
            "lidar2camera": np.stack(lidar2camera).astype(np.float32),
            "camera2lidar": np.stack(camera2lidar).astype(np.float32),
            "lidar2image": np.stack(lidar2image).astype(np.float32),
            "ann_info": ann_info,
        })
        return data

    def __getitem__(self, index):
        data = self.get_data_info(index)
        results = self.pipeline(data)
        if self.with_prev_frame:
            results.update(self._prev_frame(self.infos[index], data["ego2global"], results))
        return results

    def _prev_frame(self, info, ego2global, current):
        """The ``prev_*`` inputs of one sample (see ``with_prev_frame``), from the pipeline's output of the previous
        key frame; ``current`` is this frame's output."""
        prev_info = self.infos_by_token.get(info["prev"]) if info["prev"] else None
        out = {"ego2global": torch.from_numpy(ego2global), "prev_exists": torch.tensor(prev_info is not None)}
        prev, prev_ego2global = current, ego2global
        if prev_info is not None:
            prev_data = self._data_info(prev_info, empty_ann_info())
            prev, prev_ego2global = self.pipeline(prev_data), prev_data["ego2global"]
        for key in ("img", "lidar2image", "img_aug_matrix", "lidar_aug_matrix"):
            if key not in prev:
                raise ValueError(f"{self.ann_file}: with_prev_frame needs '{key}' in the pipeline's output")
            out[f"prev_{key}"] = prev[key]
        out["prev_ego2global"] = torch.from_numpy(prev_ego2global)
        return out
