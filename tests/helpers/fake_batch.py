"""A small training batch in the collated format (docs/conventions.md), with the real nuScenes rig's calibration."""
import json
import os

import numpy as np
import torch

from mmdet3d.utils.config import load_config

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
REPO = os.path.dirname(os.path.dirname(DATA))
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
TINY = ["--image_size", "[32, 88]", "--point_cloud_range", "[-12.0, -12.0, -5.0, 12.0, 12.0, 3.0]",
        "--voxel_size", "[0.3, 0.3, 0.2]"]


def tiny_config(name, *overrides):
    """A config of configs/synthetic/det shrunk to a 20x20 BEV and 32x88 images."""
    return load_config(os.path.join(REPO, "configs", "synthetic", "det", name), TINY + list(overrides))


def make_batch(batch_size=2, image_size=(32, 88), seed=0, with_points=True):
    rng = np.random.RandomState(seed)
    with open(os.path.join(DATA, "sample.json")) as f:
        meta = json.load(f)
    intrinsics, cam2lidar, lidar2cam, lidar2image, cam2ego = [], [], [], [], []
    scale = image_size[1] / 1600.0
    aug = np.eye(4)
    aug[0, 0] = aug[1, 1] = scale
    aug[1, 3] = -(900 * scale - image_size[0])  # bottom crop as ImageAug3D does
    for cam in CAMERAS:
        k = np.eye(4)
        k[:3, :3] = meta["cameras"][cam]["intrinsic"]
        l2c = np.asarray(meta["cameras"][cam]["lidar2cam"])
        intrinsics.append(k)
        lidar2cam.append(l2c)
        cam2lidar.append(np.linalg.inv(l2c))
        lidar2image.append(k @ l2c)
        cam2ego.append(np.asarray(meta["cameras"][cam]["cam2ego"]))

    def stack(mats):
        return torch.tensor(np.stack(mats), dtype=torch.float32)[None].repeat(batch_size, 1, 1, 1)

    boxes = [torch.tensor([[5.0, 2.0, -1.0, 4.5, 1.9, 1.6, 0.3, 1.0, 0.0],
                           [-6.0, -4.0, -1.0, 0.6, 0.6, 1.7, 1.2, 0.0, 0.5]], dtype=torch.float32)
             for _ in range(batch_size)]
    batch = {
        "img": torch.tensor(rng.normal(size=(batch_size, 6, 3, *image_size)), dtype=torch.float32),
        "camera_intrinsics": stack(intrinsics),
        "camera2lidar": stack(cam2lidar),
        "lidar2camera": stack(lidar2cam),
        "lidar2image": stack(lidar2image),
        "camera2ego": stack(cam2ego),
        "img_aug_matrix": torch.tensor(aug, dtype=torch.float32)[None, None].repeat(batch_size, 6, 1, 1),
        "lidar2ego": torch.tensor(meta["lidar"]["lidar2ego"], dtype=torch.float32)[None].repeat(batch_size, 1, 1),
        "lidar_aug_matrix": torch.eye(4)[None].repeat(batch_size, 1, 1),
        "gt_bboxes_3d": boxes,
        "gt_labels_3d": [torch.tensor([0, 8]) for _ in range(batch_size)],
        "metas": [{"token": f"sample{b}"} for b in range(batch_size)],
    }
    if with_points:
        batch["points"] = [torch.tensor(np.concatenate([rng.uniform(-11, 11, (400, 2)), rng.uniform(-3, 1, (400, 1)),
                                                        rng.uniform(0, 1, (400, 2))], 1), dtype=torch.float32)
                           for _ in range(batch_size)]
    return batch
