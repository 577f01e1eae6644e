"""The previous key frame for the temporal BEVFormer student: the converter's ``prev`` tokens and the dataset's
``with_prev_frame`` inputs (VARIANTS.md B.3 item 10), collated as the model reads them."""
import os
import pickle

import pytest
import torch
from nuscenes import NuScenes

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.datasets.collate import collate
from mmdet3d.models.fusion_models.temporal import PREV_KEYS

CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]
MATRICES = ["camera_intrinsics", "camera2ego", "lidar2ego", "lidar2camera", "camera2lidar", "lidar2image",
            "img_aug_matrix", "lidar_aug_matrix"]
PIPELINE = [dict(type="LoadMultiViewImageFromFiles", to_float32=True),
            dict(type="ImageAug3D", final_dim=[32, 64], resize_lim=[0.6, 0.6], bot_pct_lim=[0.0, 0.0],
                 rot_lim=[0.0, 0.0], rand_flip=False, is_train=False),
            dict(type="GlobalRotScaleTrans", resize_lim=[1.0, 1.0], rot_lim=[0.0, 0.0], trans_lim=0.0,
                 is_train=False),
            dict(type="ImageNormalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            dict(type="DefaultFormatBundle3D", classes=CLASSES),
            dict(type="Collect3D", keys=["img"], meta_keys=MATRICES)]


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return NuScenesDataset(synthetic_root, os.path.join(synthetic_root, "nuscenes_infos_train.pkl"),
                           pipeline=PIPELINE, object_classes=CLASSES, with_prev_frame=True)


def test_converter_links_each_key_frame_to_the_previous_one(synthetic_root, dataset):
    nusc = NuScenes(version="v1.0-mini", dataroot=synthetic_root, verbose=False)
    for info in dataset.infos:
        sample = nusc.get("sample", info["token"])
        assert info["prev"] == sample["prev"] and info["scene_token"] == sample["scene_token"]
    assert any(info["prev"] == "" for info in dataset.infos) and any(info["prev"] for info in dataset.infos)


def test_second_frame_gets_the_first_frames_images_and_pose(dataset):
    second = next(i for i, info in enumerate(dataset.infos) if info["prev"])
    first = next(i for i, info in enumerate(dataset.infos) if info["token"] == dataset.infos[second]["prev"])
    sample, previous = dataset[second], dataset[first]
    assert sample["prev_exists"].item() is True
    assert torch.equal(sample["prev_img"], previous["img"]) and not torch.equal(sample["prev_img"], sample["img"])
    for key in ("lidar2image", "img_aug_matrix", "lidar_aug_matrix"):
        assert torch.equal(sample[f"prev_{key}"], previous[key]), key
    torch.testing.assert_close(sample["prev_ego2global"], torch.from_numpy(dataset.get_data_info(first)["ego2global"]))
    torch.testing.assert_close(sample["ego2global"], torch.from_numpy(dataset.get_data_info(second)["ego2global"]))
    assert not torch.equal(sample["prev_ego2global"], sample["ego2global"])   # the car moved


def test_first_frame_of_a_scene_has_no_previous_frame(dataset):
    first = next(i for i, info in enumerate(dataset.infos) if not info["prev"])
    sample = dataset[first]
    assert sample["prev_exists"].item() is False
    assert torch.equal(sample["prev_img"], sample["img"])
    assert torch.equal(sample["prev_ego2global"], sample["ego2global"])


def test_collated_batch_has_what_the_temporal_model_reads(dataset):
    batch = collate([dataset[0], dataset[1]])
    assert batch["prev_exists"].dtype == torch.bool and batch["prev_exists"].shape == (2,)
    assert batch["prev_img"].shape == batch["img"].shape == (2, 6, 3, 32, 64)
    assert batch["prev_ego2global"].shape == batch["ego2global"].shape == (2, 4, 4)
    assert set(PREV_KEYS) <= set(batch)


def test_old_infos_without_prev_tokens_are_a_clear_error(synthetic_root, tmp_path):
    with open(os.path.join(synthetic_root, "nuscenes_infos_train.pkl"), "rb") as f:
        data = pickle.load(f)
    for info in data["infos"]:
        del info["prev"]
    path = tmp_path / "old_infos.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(ValueError, match="with_prev_frame needs the infos' 'prev' key-frame tokens"):
        NuScenesDataset(synthetic_root, str(path), pipeline=PIPELINE, object_classes=CLASSES, with_prev_frame=True)
    assert len(NuScenesDataset(synthetic_root, str(path), pipeline=PIPELINE, object_classes=CLASSES)) == len(
        data["infos"])
