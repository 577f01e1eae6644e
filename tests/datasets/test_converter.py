import os
import pickle

import numpy as np
import pytest
from nuscenes import NuScenes
from pyquaternion import Quaternion

from mmdet3d.core.boxes import legacy_to_boxes, transform_matrix
from mmdet3d.datasets.nuscenes_converter import CAMERA_ORDER, create_nuscenes_infos


@pytest.fixture(scope="module")
def infos(synthetic_root):
    with open(os.path.join(synthetic_root, "nuscenes_infos_train.pkl"), "rb") as f:
        train = pickle.load(f)
    with open(os.path.join(synthetic_root, "nuscenes_infos_val.pkl"), "rb") as f:
        val = pickle.load(f)
    return train, val


def test_split_sizes_and_metadata(synthetic_root, infos):
    train, val = infos
    nusc = NuScenes("v1.0-mini", synthetic_root, verbose=False)
    scene_of = {s["token"]: nusc.get("scene", s["scene_token"])["name"] for s in nusc.sample}
    assert train["metadata"]["version"] == "v1.0-mini"
    assert len(train["infos"]) + len(val["infos"]) == len(nusc.sample)
    assert {scene_of[i["token"]] for i in val["infos"]} == {"scene-0103", "scene-0916"}
    stamps = [i["timestamp"] for i in train["infos"]]
    assert stamps == sorted(stamps)


def test_fields_and_geometry_against_devkit(synthetic_root, infos):
    nusc = NuScenes("v1.0-mini", synthetic_root, verbose=False)
    for info in infos[1]["infos"]:
        sample = nusc.get("sample", info["token"])
        assert list(info["cams"]) == CAMERA_ORDER
        assert os.path.isfile(os.path.join(synthetic_root, info["lidar_path"]))
        for cam, rec in info["cams"].items():
            sd = nusc.get("sample_data", sample["data"][cam])
            assert rec["data_path"] == sd["filename"]
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            np.testing.assert_allclose(rec["camera_intrinsics"], cs["camera_intrinsic"])
            # sensor2lidar maps the camera centre to where the devkit's poses put it in the LiDAR frame.
            cam_centre_global = transform_matrix(nusc.get("ego_pose", sd["ego_pose_token"])["translation"],
                                                 nusc.get("ego_pose", sd["ego_pose_token"])["rotation"]) \
                @ np.append(cs["translation"], 1.0)
            lidar2global = transform_matrix(info["ego2global_translation"], info["ego2global_rotation"]) \
                @ transform_matrix(info["lidar2ego_translation"], info["lidar2ego_rotation"])
            expected = (np.linalg.inv(lidar2global) @ cam_centre_global)[:3]
            np.testing.assert_allclose(rec["sensor2lidar_translation"], expected, atol=1e-6)
        # Boxes: the devkit's annotation (global) and our stored LiDAR box describe the same centre and heading.
        boxes = legacy_to_boxes(info["gt_boxes"], info["gt_velocity"])
        assert len(boxes) == len(sample["anns"]) == len(info["gt_names"]) == len(info["num_lidar_pts"])
        lidar2global = transform_matrix(info["ego2global_translation"], info["ego2global_rotation"]) \
            @ transform_matrix(info["lidar2ego_translation"], info["lidar2ego_rotation"])
        for box, token in zip(boxes, sample["anns"]):
            ann = nusc.get("sample_annotation", token)
            np.testing.assert_allclose(lidar2global[:3, :3] @ box[:3] + lidar2global[:3, 3], ann["translation"],
                                       atol=1e-6)
            np.testing.assert_allclose([box[4], box[3], box[5]], ann["size"], atol=1e-9)
            heading = lidar2global[:3, :3] @ np.array([np.cos(box[6]), np.sin(box[6]), 0.0])
            np.testing.assert_allclose(heading, Quaternion(ann["rotation"]).rotation_matrix[:, 0], atol=1e-3)


def test_sweeps_chain_backwards(infos):
    for info in infos[0]["infos"]:
        stamps = [s["timestamp"] for s in info["sweeps"]]
        assert stamps == sorted(stamps, reverse=True)
        assert all(t < info["timestamp"] for t in stamps)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no nuScenes tables"):
        create_nuscenes_infos(str(tmp_path), "v1.0-mini")


def test_custom_splits_json(tmp_path_factory):
    from mmdet3d.datasets.synthetic import generate

    root = str(tmp_path_factory.mktemp("custom"))
    generate(root, version="v1.0-mini", seed=1, scenes=3, frames_per_scene=2, image_size=(48, 84), sweeps=0)
    written = create_nuscenes_infos(root, "v1.0-mini", max_sweeps=0)
    assert written["train"][1] + written["val"][1] == 6
    assert written["val"][1] >= 2
