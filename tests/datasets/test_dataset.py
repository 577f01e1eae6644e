import os
import pickle

import numpy as np
import pytest

from mmdet3d.datasets import CBGSDataset, NuScenesDataset

CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]


@pytest.fixture(scope="module")
def train_set(synthetic_root):
    return NuScenesDataset(synthetic_root, os.path.join(synthetic_root, "nuscenes_infos_train.pkl"), pipeline=[],
                           object_classes=CLASSES, use_valid_flag=True)


def test_data_info_contract(train_set):
    info = train_set.get_data_info(0)
    assert len(info["image_paths"]) == 6 and all(os.path.isfile(p) for p in info["image_paths"])
    assert os.path.isfile(info["lidar_path"])
    for key in ["camera_intrinsics", "camera2ego", "lidar2camera", "camera2lidar", "lidar2image"]:
        assert info[key].shape == (6, 4, 4) and info[key].dtype == np.float32
    for key in ["lidar2ego", "ego2global"]:
        assert info[key].shape == (4, 4)
    np.testing.assert_allclose(info["lidar2image"], info["camera_intrinsics"] @ info["lidar2camera"], atol=1e-3)
    np.testing.assert_allclose(info["lidar2camera"] @ info["camera2lidar"], np.broadcast_to(np.eye(4), (6, 4, 4)),
                               atol=1e-5)
    ann = info["ann_info"]
    assert ann["gt_bboxes_3d"].shape[1] == 9 and len(ann["gt_labels_3d"]) == len(ann["gt_bboxes_3d"])
    assert np.all(np.isfinite(ann["gt_bboxes_3d"]))


def test_camera_looks_along_its_axis(train_set):
    """A point 10 m ahead of each camera projects into the middle of its image."""
    info = train_set.get_data_info(0)
    for cam in range(6):
        ahead = info["camera2lidar"][cam] @ np.array([0.0, 0.0, 10.0, 1.0])
        uvd = info["lidar2image"][cam] @ ahead
        u, v = uvd[0] / uvd[2], uvd[1] / uvd[2]
        k = info["camera_intrinsics"][cam]
        assert uvd[2] == pytest.approx(10.0, rel=1e-4)
        assert u == pytest.approx(k[0, 2], abs=1e-2) and v == pytest.approx(k[1, 2], abs=1e-2)


def test_box_mask_follows_flag(synthetic_root, train_set):
    raw = train_set.infos[0]
    by_points = NuScenesDataset(synthetic_root, train_set.ann_file, [], CLASSES, use_valid_flag=False)
    assert by_points.infos[0]["token"] == raw["token"]  # both sorted by timestamp
    assert len(by_points.get_ann_info(0)["gt_bboxes_3d"]) == int((np.asarray(raw["num_lidar_pts"]) > 0).sum())
    assert len(train_set.get_ann_info(0)["gt_bboxes_3d"]) == int(np.asarray(raw["valid_flag"]).sum())
    assert len(train_set.get_ann_info(0)["gt_bboxes_3d"]) < len(raw["gt_boxes"])  # some boxes have no points


def test_cbgs_balances_classes(train_set):
    cbgs = CBGSDataset(train_set)
    counts = np.zeros(len(CLASSES))
    for idx in cbgs.indices:
        for c in train_set.get_cat_ids(idx):
            counts[c] += 1
    raw = np.zeros(len(CLASSES))
    for idx in range(len(train_set)):
        for c in train_set.get_cat_ids(idx):
            raw[c] += 1
    present = raw > 0
    # Class-sample share after CBGS is flatter than before.
    assert (counts[present] / counts.sum()).std() <= (raw[present] / raw.sum()).std()
    assert CBGSDataset(train_set).indices == cbgs.indices  # seeded


def test_missing_and_corrupt_info_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        NuScenesDataset(str(tmp_path), str(tmp_path / "missing.pkl"), [], CLASSES)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="bad.pkl"):
        NuScenesDataset(str(tmp_path), str(bad), [], CLASSES)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="wrong.pkl"):
        NuScenesDataset(str(tmp_path), str(wrong), [], CLASSES)
