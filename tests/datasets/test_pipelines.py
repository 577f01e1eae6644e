"""Train/test pipelines on the real nuScenes frame of tests/data: shapes, geometry consistency between LiDAR points,
boxes and augmented images, the filters, normalisation, GridMask, formatting and collation."""
import copy
import json
import os

import numpy as np
import pytest
import torch
from mmengine.registry import FUNCTIONS
from PIL import Image

from mmdet3d.core.boxes import points_in_boxes
from mmdet3d.datasets.collate import collate
from mmdet3d.datasets.pipelines import (Collect3D, Compose, DefaultFormatBundle3D, GlobalRotScaleTrans, GridMask,
                                        ImageAug3D, ImageNormalize, LoadAnnotations3D, LoadMultiViewImageFromFiles,
                                        LoadPointsFromFile, ObjectNameFilter, ObjectRangeFilter, PointShuffle,
                                        PointsRangeFilter, RandomFlip3D)

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]
MATRICES = ["camera_intrinsics", "camera2ego", "lidar2ego", "lidar2camera", "camera2lidar", "lidar2image",
            "img_aug_matrix", "lidar_aug_matrix"]
PCD_RANGE = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]


def real_frame():
    """The results dict of docs/conventions.md for the real frame, built from sample.json."""
    with open(os.path.join(DATA, "sample.json")) as f:
        sample = json.load(f)
    cams = [sample["cameras"][name] for name in CAMERAS]
    intrinsics = np.stack([np.eye(4)] * 6)
    intrinsics[:, :3, :3] = [c["intrinsic"] for c in cams]
    lidar2camera = np.array([c["lidar2cam"] for c in cams], dtype=np.float64)
    boxes = np.array([b["center"] + b["size_lwh"] + [b["yaw"]] + b["velocity"] for b in sample["boxes"]])
    boxes = np.nan_to_num(boxes, nan=0.0)  # objects seen once have NaN velocity; the dataset sets it to 0
    names = [b["name"] for b in sample["boxes"]]
    return {
        "token": sample["sample_token"],
        "timestamp": int(round(sample["timestamp_s"] * 1e6)),
        "lidar_path": os.path.join(DATA, sample["lidar"]["file"]),
        "sweeps": [],
        "location": "singapore-onenorth",
        "lidar2ego": np.array(sample["lidar"]["lidar2ego"], dtype=np.float32),
        "ego2global": np.array(sample["ego2global"], dtype=np.float32),
        "image_paths": [os.path.join(DATA, c["file"]) for c in cams],
        "camera_intrinsics": intrinsics.astype(np.float32),
        "camera2ego": np.array([c["cam2ego"] for c in cams], dtype=np.float32),
        "lidar2camera": lidar2camera.astype(np.float32),
        "camera2lidar": np.linalg.inv(lidar2camera).astype(np.float32),
        "lidar2image": (intrinsics @ lidar2camera).astype(np.float32),
        "ann_info": {
            "gt_bboxes_3d": boxes.astype(np.float32),
            "gt_labels_3d": np.array([CLASSES.index(n) if n in CLASSES else -1 for n in names], dtype=np.int64),
            "gt_names": names,
        },
    }


def loading_steps(test_mode):
    return [
        dict(type="LoadMultiViewImageFromFiles", to_float32=True),
        dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5, reduce_beams=32,
             load_augmented=None),
        dict(type="LoadPointsFromMultiSweeps", sweeps_num=9, load_dim=5, use_dim=5, reduce_beams=32,
             pad_empty_sweeps=True, remove_close=True, load_augmented=None, test_mode=test_mode),
        dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    ]


# The original configs' pipelines (official_convfuser_resolved.yaml) without ObjectPaste and LoadBEVSegmentation.
COLLECT = dict(type="Collect3D", keys=["img", "points", "depth_gt", "gt_bboxes_3d", "gt_labels_3d", "gt_masks_bev"],
               meta_keys=MATRICES)
TRAIN_PIPELINE = loading_steps(False) + [
    dict(type="ImageAug3D", final_dim=[256, 704], resize_lim=[0.38, 0.55], bot_pct_lim=[0.0, 0.0],
         rot_lim=[-5.4, 5.4], rand_flip=True, is_train=True),
    dict(type="GlobalRotScaleTrans", resize_lim=[0.95, 1.05], rot_lim=[-0.3925, 0.3925], trans_lim=0, is_train=True),
    dict(type="RandomFlip3D"),
    dict(type="PointsRangeFilter", point_cloud_range=PCD_RANGE),
    dict(type="ObjectRangeFilter", point_cloud_range=PCD_RANGE),
    dict(type="ObjectNameFilter", classes=CLASSES),
    dict(type="ImageNormalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    dict(type="GridMask", use_h=True, use_w=True, max_epoch=20, rotate=1, offset=False, ratio=0.5, mode=1, prob=0.0,
         fixed_prob=True),
    dict(type="PointShuffle"),
    dict(type="DefaultFormatBundle3D", classes=CLASSES),
    COLLECT,
]
TEST_PIPELINE = loading_steps(True) + [
    dict(type="ImageAug3D", final_dim=[256, 704], resize_lim=[0.48, 0.48], bot_pct_lim=[0.0, 0.0],
         rot_lim=[0.0, 0.0], rand_flip=False, is_train=False),
    dict(type="GlobalRotScaleTrans", resize_lim=[1.0, 1.0], rot_lim=[0.0, 0.0], trans_lim=0.0, is_train=False),
    dict(type="PointsRangeFilter", point_cloud_range=PCD_RANGE),
    dict(type="ImageNormalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    dict(type="DefaultFormatBundle3D", classes=CLASSES),
    COLLECT,
]


def project(points, lidar2image):
    """Pixel coordinates ``[P, 2]`` and depths ``[P]`` of LiDAR points through one 4x4 ``lidar2image``."""
    q = np.c_[np.asarray(points, dtype=np.float64)[:, :3], np.ones(len(points))] @ np.float64(lidar2image).T
    return q[:, :2] / q[:, 2:3], q[:, 2]


def undo_lidar_aug(points, lidar_aug_matrix):
    inverse = np.linalg.inv(np.float64(lidar_aug_matrix))
    return np.asarray(points, dtype=np.float64)[:, :3] @ inverse[:3, :3].T + inverse[:3, 3]


def apply_img_aug(uv, img_aug_matrix):
    m = np.float64(img_aug_matrix)
    return uv @ m[:2, :2].T + m[:2, 3]


# ---------------------------------------------------------------- full pipelines

def check_sample(sample, num_boxes=None):
    assert sample["img"].shape == (6, 3, 256, 704) and sample["img"].dtype == torch.float32
    assert sample["points"].dtype == torch.float32 and sample["points"].shape[1] == 5
    assert sample["gt_bboxes_3d"].dtype == torch.float32 and sample["gt_bboxes_3d"].shape[1] == 9
    assert sample["gt_labels_3d"].dtype == torch.int64
    assert len(sample["gt_labels_3d"]) == len(sample["gt_bboxes_3d"])
    if num_boxes is not None:
        assert len(sample["gt_bboxes_3d"]) == num_boxes
    for key in MATRICES:
        expected = (4, 4) if key in ("lidar2ego", "lidar_aug_matrix") else (6, 4, 4)
        assert sample[key].shape == expected and sample[key].dtype == torch.float32, key
    assert "depth_gt" not in sample and "gt_masks_bev" not in sample
    assert sample["metas"]["token"] == "ca9a282c9e77460f8360f564131a8af5"
    assert sample["metas"]["ego2global"].shape == (4, 4) and len(sample["metas"]["image_paths"]) == 6


def test_test_pipeline_on_the_real_frame_is_deterministic():
    first = Compose(TEST_PIPELINE)(real_frame())
    np.random.seed(123)
    second = Compose(TEST_PIPELINE)(real_frame())
    check_sample(first, num_boxes=69)
    for key in ["img", "points", "gt_bboxes_3d", *MATRICES]:
        assert torch.equal(first[key], second[key]), key
    # resize 0.48: 1600x900 -> 768x432, centred bottom crop (32, 176, 736, 432), no flip, no rotation
    expected = np.eye(4)
    expected[:2, :2] = np.diag([0.48, 0.48])
    expected[:2, 3] = [-32, -176]
    np.testing.assert_allclose(first["img_aug_matrix"].numpy(), np.broadcast_to(expected, (6, 4, 4)), atol=1e-6)
    assert torch.equal(first["lidar_aug_matrix"], torch.eye(4))
    # no sweeps on disk: the padded key frame, 10 copies minus the near-vehicle points of the 9 copies
    key = np.fromfile(first["metas"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
    inside = ((key[:, :3] > PCD_RANGE[:3]) & (key[:, :3] < PCD_RANGE[3:])).all(1)
    near = (np.abs(key[:, 0]) < 1) & (np.abs(key[:, 1]) < 1)
    assert len(first["points"]) == inside.sum() + 9 * (inside & ~near).sum()
    assert not first["points"][:, 4].any()


def test_train_pipeline_on_the_real_frame():
    np.random.seed(0)
    sample = Compose(TRAIN_PIPELINE)(real_frame())
    check_sample(sample)
    source = real_frame()["ann_info"]
    # rotation and a scale <= 1.05 keep every box within 54 / 1.05 m of the sensor inside the range
    near = (np.linalg.norm(source["gt_bboxes_3d"][:, :2], axis=1) < 54 / 1.05) & (source["gt_labels_3d"] >= 0)
    assert len(sample["gt_bboxes_3d"]) >= near.sum() > 30
    assert (sample["gt_labels_3d"] >= 0).all()
    yaw = sample["gt_bboxes_3d"][:, 6]
    assert ((yaw >= -np.pi) & (yaw < np.pi)).all()
    assert (sample["points"][:, :3].abs().amax(0) < torch.tensor([54.0, 54.0, 5.0])).all()


def test_frame_without_boxes_runs_through_both_pipelines():
    for pipeline in (TRAIN_PIPELINE, TEST_PIPELINE):
        results = real_frame()
        results["ann_info"] = {"gt_bboxes_3d": np.zeros((0, 9), np.float32), "gt_labels_3d": np.zeros(0, np.int64),
                               "gt_names": []}
        sample = Compose(pipeline)(results)
        assert sample["gt_bboxes_3d"].shape == (0, 9) and sample["gt_labels_3d"].shape == (0,)


def test_unsupported_original_transforms_fail_clearly():
    with pytest.raises(ValueError, match="ObjectPaste is not supported"):
        Compose([dict(type="ObjectPaste", stop_epoch=-1, db_sampler={})])
    with pytest.raises(ValueError, match="LoadBEVSegmentation is not supported"):
        Compose([dict(type="LoadBEVSegmentation", dataset_root="x", xbound=[-50, 50, 0.5])])
    with pytest.raises(KeyError, match="NoSuchTransform"):
        Compose([dict(type="NoSuchTransform")])


def test_compose_accepts_callables_and_stops_on_none():
    calls = []
    pipeline = Compose([lambda r: calls.append(1) or r, lambda r: None, lambda r: calls.append(2) or r])
    assert pipeline({}) is None and calls == [1]


# ---------------------------------------------------------------- geometry on the real frame

def test_lidar_points_project_into_the_test_images_at_plausible_depths():
    sample = Compose(TEST_PIPELINE)(real_frame())
    points = sample["points"].numpy()
    for cam in range(6):
        uv, depth = project(points, sample["lidar2image"][cam])
        uv = apply_img_aug(uv, sample["img_aug_matrix"][cam])
        visible = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 704) & (uv[:, 1] >= 0) & (uv[:, 1] < 256)
        assert visible.sum() > 10 * 1000, CAMERAS[cam]
        assert depth[visible].min() > 1.0 and np.mean(depth[visible] < 80) > 0.98, CAMERAS[cam]
    # LIDAR_TOP's +y points forward: the points ahead within +-24 deg and below the sensor (the crop keeps the
    # lower part of the image) land in CAM_FRONT
    ahead = (points[:, 1] > 5) & (np.abs(points[:, 0]) < 0.45 * points[:, 1]) & (points[:, 2] < 0)
    uv, depth = project(points[ahead], sample["lidar2image"][0])
    uv = apply_img_aug(uv, sample["img_aug_matrix"][0])
    in_front = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 704) & (uv[:, 1] >= 0) & (uv[:, 1] < 256)
    assert ahead.sum() > 1000 and in_front.mean() > 0.95


# Saturated marker colours rarely found in street photos; one per marker of a camera.
PALETTE = np.array([(255, 0, 255), (0, 255, 255), (0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 128, 0)])
MARKER_HALF = 5  # 11x11 source pixels: still >= 4 px wide after the smallest train resize 0.38


def pick_marker_points(points, lidar2image, width, height):
    """Indices of up to 6 points seen 3-60 m away in the lower half of the image (kept by the bottom crop),
    at least 60 px apart."""
    uv, depth = project(points, lidar2image)
    candidates = np.flatnonzero((depth > 3) & (depth < 60) & (uv[:, 0] > 40) & (uv[:, 0] < width - 40)
                                & (uv[:, 1] > height * 0.53) & (uv[:, 1] < height - 20))
    chosen = []
    for i in candidates:
        if all(np.abs(uv[i] - uv[j]).max() > 60 for j in chosen):
            chosen.append(i)
        if len(chosen) == len(PALETTE):
            break
    return np.array(chosen, dtype=int)


def marker_offsets(seed):
    """Paints a marker at each chosen point's pixel, runs the train augmentations, and returns per marker
    (camera flipped?, predicted centre - observed centre) with the prediction from the augmented points."""
    np.random.seed(seed)
    results = LoadPointsFromFile("LIDAR", 5, 5)(LoadMultiViewImageFromFiles()(real_frame()))
    points = results["points"]
    picks = []
    for cam, image in enumerate(results["img"]):
        picks.append(pick_marker_points(points, results["lidar2image"][cam], image.width, image.height))
        uv, _ = project(points[picks[-1]], results["lidar2image"][cam])
        pixels = np.array(image)
        for colour, (u, v) in zip(PALETTE, np.floor(uv).astype(int)):
            pixels[v - MARKER_HALF:v + MARKER_HALF + 1, u - MARKER_HALF:u + MARKER_HALF + 1] = colour
        results["img"][cam] = Image.fromarray(pixels)
    for transform in (LoadAnnotations3D(),
                      ImageAug3D([256, 704], [0.38, 0.55], [0.0, 0.0], [-5.4, 5.4], rand_flip=True, is_train=True),
                      GlobalRotScaleTrans([0.95, 1.05], [-0.3925, 0.3925], 0, is_train=True), RandomFlip3D()):
        results = transform(results)
    assert not np.allclose(results["points"][:, :3], points[:, :3])
    offsets = []
    for cam, image in enumerate(results["img"]):
        # REFERENCE §4.3: undo the LiDAR augmentation, project, apply the image augmentation
        original = undo_lidar_aug(results["points"][picks[cam]], results["lidar_aug_matrix"])
        np.testing.assert_allclose(original, points[picks[cam], :3], atol=1e-3)
        uv, _ = project(original, results["lidar2image"][cam])
        predicted = apply_img_aug(np.floor(uv) + 0.5, results["img_aug_matrix"][cam])
        pixels = np.asarray(image).astype(int)
        for colour, (pu, pv) in zip(PALETTE, predicted):
            if not (8 <= pu < 704 - 8 and 8 <= pv < 256 - 8):
                continue  # cropped away or too close to the border
            assert (np.abs(pixels[int(pv), int(pu)] - colour).sum() < 100), "the predicted pixel shows no marker"
            top, left = int(pv) - 7, int(pu) - 7
            ys, xs = np.nonzero(np.abs(pixels[top:top + 15, left:left + 15] - colour).sum(-1) < 100)
            observed = np.array([left + xs.mean() + 0.5, top + ys.mean() + 0.5])
            offsets.append((results["img_aug_matrix"][cam][0, 0] < 0, np.array([pu, pv]) - observed))
    return offsets


def test_projected_points_land_on_their_pixels_after_augmentation():
    offsets = [o for seed in range(4) for o in marker_offsets(seed)]
    flipped = np.array([f for f, _ in offsets])
    error = np.array([e for _, e in offsets])
    assert len(offsets) > 60 and flipped.sum() > 20 and (~flipped).sum() > 20
    assert np.abs(error).max() < 1.0
    # a systematic half- or one-pixel slip (e.g. a flip about W - 1) would show in the mean offsets
    assert np.abs(error[flipped].mean(0)).max() < 0.25
    assert np.abs(error[~flipped].mean(0)).max() < 0.25


def resized(boxes, margin):
    out = np.float64(boxes).copy()
    out[:, 3:6] += margin
    return out


def check_moved_with_matrix(points, boxes, results):
    """Augmented points and boxes are the originals under ``lidar_aug_matrix``, and the points inside each box
    stay inside it (up to float32 rounding: boxes shrunk / grown by 2 cm)."""
    aug = np.float64(results["lidar_aug_matrix"])
    linear = aug[:3, :3]
    scale = np.cbrt(abs(np.linalg.det(linear)))
    np.testing.assert_allclose(results["points"][:, :3], points[:, :3] @ linear.T + aug[:3, 3], atol=1e-3)
    np.testing.assert_array_equal(results["points"][:, 3:], points[:, 3:])
    new_boxes = np.float64(results["gt_bboxes_3d"])
    inside_before = points_in_boxes(points, resized(boxes, -0.02))
    inside_after = points_in_boxes(results["points"], new_boxes)
    assert inside_before.sum() > 500
    assert not (inside_before & ~inside_after).any()
    assert not (inside_after & ~points_in_boxes(points, resized(boxes, 0.02))).any()
    np.testing.assert_allclose(new_boxes[:, :3], boxes[:, :3] @ linear.T + aug[:3, 3], atol=1e-3)
    np.testing.assert_allclose(new_boxes[:, 3:6], boxes[:, 3:6] * scale, rtol=1e-5)
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], 1) @ linear[:2, :2].T / scale
    np.testing.assert_allclose(np.stack([np.cos(new_boxes[:, 6]), np.sin(new_boxes[:, 6])], 1), heading, atol=1e-5)
    np.testing.assert_allclose(new_boxes[:, 7:9], boxes[:, 7:9] @ linear[:2, :2].T, atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_boxes_move_with_their_points(seed):
    np.random.seed(seed)
    results = LoadAnnotations3D()(LoadPointsFromFile("LIDAR", 5, 5)(real_frame()))
    points, boxes = results["points"].copy(), results["gt_bboxes_3d"].copy()
    results = GlobalRotScaleTrans([0.95, 1.05], [-0.3925, 0.3925], 0.5, is_train=True)(results)
    check_moved_with_matrix(points, boxes, results)
    results = RandomFlip3D()(results)
    check_moved_with_matrix(points, boxes, results)


def test_global_rot_scale_trans_by_hand():
    np.random.seed(5)
    scale, theta, shift = np.random.uniform(0.9, 1.1), np.random.uniform(-0.5, 0.5), np.random.normal(0, 0.2, 3)
    np.random.seed(5)
    box = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.3, 2.0, 0.0]], np.float32)
    out = GlobalRotScaleTrans([0.9, 1.1], [-0.5, 0.5], 0.2, True)({"points": box[:, :5].copy(),
                                                                   "gt_bboxes_3d": box.copy()})
    c, s = np.cos(theta), np.sin(theta)
    centre = scale * (np.array([10 * c, 10 * s, -1.0]) + shift)
    np.testing.assert_allclose(out["points"][0, :3], centre, rtol=1e-5)
    np.testing.assert_allclose(out["gt_bboxes_3d"][0], [*centre, 4 * scale, 2 * scale, 1.5 * scale, 0.3 + theta,
                                                        2 * scale * c, 2 * scale * s], rtol=1e-5)
    expected = np.eye(4)
    expected[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    expected[:3, 3] = scale * shift
    np.testing.assert_allclose(out["lidar_aug_matrix"], expected, rtol=1e-5, atol=1e-6)


def test_global_rot_scale_trans_is_identity_in_test_mode():
    results = LoadAnnotations3D()(LoadPointsFromFile("LIDAR", 5, 5)(real_frame()))
    before = copy.deepcopy(results)
    out = GlobalRotScaleTrans([1.0, 1.0], [0.0, 0.0], 0.0, is_train=False)(results)
    np.testing.assert_array_equal(out["points"], before["points"])
    np.testing.assert_array_equal(out["gt_bboxes_3d"], before["gt_bboxes_3d"])
    np.testing.assert_array_equal(out["lidar_aug_matrix"], np.eye(4))


def test_random_flip_by_hand():
    box = np.array([[3.0, 4.0, 1.0, 4.0, 2.0, 1.5, 0.3, 1.0, 2.0]], np.float32)
    seen = set()
    for seed in range(16):
        np.random.seed(seed)
        out = RandomFlip3D()({"points": box[:, :5].copy(), "gt_bboxes_3d": box.copy(),
                              "lidar_aug_matrix": np.diag([2.0, 2.0, 2.0, 1.0]).astype(np.float32)})
        fx, fy = out["lidar_aug_matrix"][0, 0] < 0, out["lidar_aug_matrix"][1, 1] < 0
        seen.add((fx, fy))
        sx, sy = (-1 if fx else 1), (-1 if fy else 1)
        yaw = {(False, False): 0.3, (False, True): -0.3, (True, False): np.pi - 0.3, (True, True): 0.3 - np.pi}
        got = out["gt_bboxes_3d"][0]
        np.testing.assert_allclose(got[[0, 1, 2, 3, 4, 5, 7, 8]], [3 * sx, 4 * sy, 1, 4, 2, 1.5, sx, 2 * sy], rtol=1e-6)
        assert np.isclose(np.cos(got[6] - yaw[(fx, fy)]), 1.0)
        np.testing.assert_allclose(out["points"][0, :3], [3 * sx, 4 * sy, 1], rtol=1e-6)
        np.testing.assert_allclose(out["lidar_aug_matrix"], np.diag([2.0 * sx, 2.0 * sy, 2.0, 1.0]))
    assert len(seen) == 4


# ---------------------------------------------------------------- image augmentation on small images

def test_image_aug_uses_the_actual_image_size():
    image = Image.new("RGB", (400, 225), (10, 20, 30))
    out = ImageAug3D([64, 176], [0.48, 0.48], [0.0, 0.0], [0.0, 0.0], False, False)({"img": [image] * 2})
    assert [im.size for im in out["img"]] == [(176, 64)] * 2 and out["img_shape"] == [(64, 176)] * 2
    # 400x225 * 0.48 -> 192x108; centred bottom crop at (8, 44)
    expected = np.eye(4)
    expected[:2, :2] = np.diag([192 / 400, 108 / 225])
    expected[:2, 3] = [-8, -44]
    np.testing.assert_allclose(out["img_aug_matrix"][0], expected, atol=1e-6)
    assert out["img"][0].getpixel((5, 5)) == (10, 20, 30)


def test_image_aug_rejects_bad_args_and_inputs():
    with pytest.raises(ValueError, match="resize_lim"):
        ImageAug3D([256, 704], [0.55, 0.38], [0.0, 0.0], [0.0, 0.0], False, False)
    with pytest.raises(ValueError, match="final_dim"):
        ImageAug3D([256], [0.4, 0.5], [0.0, 0.0], [0.0, 0.0], False, False)
    with pytest.raises(KeyError, match="LoadMultiViewImageFromFiles"):
        ImageAug3D([256, 704], [0.4, 0.5], [0.0, 0.0], [0.0, 0.0], False, False)({})


# ---------------------------------------------------------------- filters

def test_points_range_filter_is_strict():
    points = np.array([[0, 0, 0, 1, 0], [54, 0, 0, 1, 0], [53.9, -53.9, 2.9, 1, 0], [0, 0, -5, 1, 0]], np.float32)
    out = PointsRangeFilter(PCD_RANGE)({"points": points})["points"]
    np.testing.assert_array_equal(out, points[[0, 2]])


def test_object_range_filter_is_strict_and_wraps_yaw():
    boxes = np.zeros((4, 9), np.float32)
    boxes[:, :2] = [[0, 0], [-54, 3], [53.9, 53.9], [10, 60]]
    boxes[:, 6] = [4.0, 0.0, -3.5, 0.0]
    out = ObjectRangeFilter(PCD_RANGE)({"gt_bboxes_3d": boxes, "gt_labels_3d": np.arange(4)})
    np.testing.assert_array_equal(out["gt_labels_3d"], [0, 2])
    np.testing.assert_allclose(out["gt_bboxes_3d"][:, 6], [4.0 - 2 * np.pi, -3.5 + 2 * np.pi], rtol=1e-6)


def test_object_name_filter_drops_unknown_labels():
    boxes = np.arange(27, dtype=np.float32).reshape(3, 9)
    out = ObjectNameFilter(CLASSES)({"gt_bboxes_3d": boxes, "gt_labels_3d": np.array([9, -1, 0])})
    np.testing.assert_array_equal(out["gt_labels_3d"], [9, 0])
    np.testing.assert_array_equal(out["gt_bboxes_3d"], boxes[[0, 2]])


def test_point_shuffle_permutes_rows():
    points = np.arange(500, dtype=np.float32).reshape(100, 5)
    np.random.seed(0)
    out = PointShuffle()({"points": points})["points"]
    assert not np.array_equal(out, points)
    np.testing.assert_array_equal(out[np.argsort(out[:, 0])], points)


# ---------------------------------------------------------------- normalisation and GridMask

def test_image_normalize_by_hand():
    images = [Image.new("RGB", (8, 4), (255, 0, 51)), Image.new("RGB", (8, 4), (0, 128, 255))]
    out = ImageNormalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])({"img": images})["img"]
    assert out.shape == (2, 3, 4, 8) and out.dtype == torch.float32 and out.stride() == (96, 32, 8, 1)
    expected = (np.array([1.0, 0.0, 0.2]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(out[0, :, 2, 5].numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="differ in size"):
        ImageNormalize([0, 0, 0], [1, 1, 1])({"img": [images[0], Image.new("RGB", (4, 4))]})


def grid_mask(**kwargs):
    args = dict(use_h=True, use_w=False, max_epoch=20, rotate=1, offset=False, ratio=0.5, mode=0, prob=1.0,
                fixed_prob=True) | kwargs
    return GridMask(**args)


def test_grid_mask_with_prob_zero_is_identity():
    img = torch.randn(6, 3, 32, 48)
    np.random.seed(0)
    assert torch.equal(grid_mask(prob=0.0, use_w=True, mode=1)({"img": img.clone()})["img"], img)


def test_grid_mask_zeroes_periodic_row_stripes():
    img = torch.rand(2, 3, 40, 64) + 1.0
    for seed in range(5):
        np.random.seed(seed)
        out = grid_mask()({"img": img.clone()})["img"]
        zero_rows = (out == 0).all(dim=(0, 1, 3))
        kept_rows = (out == img).all(dim=(0, 1, 3))
        assert (zero_rows | kept_rows).all() and zero_rows.any() and kept_rows.any()
        edges = np.flatnonzero(np.diff(np.r_[0, zero_rows.int().numpy(), 0]) != 0)
        starts, ends = edges[::2], edges[1::2]
        inner = (starts > 0) & (ends < 40)  # stripes cut by the image border are shorter
        if inner.sum() > 1:
            assert len(set(np.diff(starts[starts > 0]))) == 1  # one period d
            assert len(set((ends - starts)[inner])) == 1       # one stripe length


def test_grid_mask_mode_one_inverts_and_offset_fills_noise():
    img = torch.rand(1, 3, 40, 64) + 1.0
    np.random.seed(3)
    kept = (grid_mask()({"img": img.clone()})["img"] == img).all(dim=(0, 1, 3))
    np.random.seed(3)
    inverted = (grid_mask(mode=1)({"img": img.clone()})["img"] == img).all(dim=(0, 1, 3))
    assert torch.equal(kept, ~inverted)
    np.random.seed(3)
    noisy = grid_mask(offset=True)({"img": img.clone()})["img"]
    assert torch.equal((noisy == img).all(dim=(0, 1, 3)), kept)
    assert (noisy[..., ~kept, :].abs() < 1).all() and noisy[..., ~kept, :].std() > 0.3


def test_grid_mask_probability_ramps_with_epoch():
    mask = grid_mask(prob=0.6, fixed_prob=False)
    mask.set_epoch(5)
    assert mask.prob == pytest.approx(0.15)
    fixed = grid_mask(prob=0.6)
    fixed.set_epoch(5)
    assert fixed.prob == 0.6
    with pytest.raises(TypeError, match="ImageNormalize"):
        grid_mask()({"img": [Image.new("RGB", (8, 8))]})


# ---------------------------------------------------------------- formatting and collation

def formatted(num_boxes=2, labels=None):
    results = {
        "img": torch.zeros(6, 3, 16, 32), "points": np.ones((7, 5), np.float32),
        "gt_bboxes_3d": np.ones((num_boxes, 9), np.float32),
        "gt_labels_3d": np.zeros(num_boxes, np.int64) if labels is None else np.array(labels),
        "token": "t", "timestamp": 5, "lidar2ego": np.eye(4), "ego2global": np.eye(4), "sweeps": [],
    }
    for key in MATRICES:
        results[key] = np.eye(4) if key in ("lidar2ego", "lidar_aug_matrix") else np.stack([np.eye(4)] * 6)
    return Collect3D(COLLECT["keys"], MATRICES)(DefaultFormatBundle3D(CLASSES)(results))


def test_collect_outputs_tensors_and_plain_metas():
    sample = formatted()
    assert set(sample) == {"img", "points", "gt_bboxes_3d", "gt_labels_3d", "metas", *MATRICES}
    assert isinstance(sample["points"], torch.Tensor) and sample["gt_labels_3d"].dtype == torch.int64
    assert sample["metas"]["token"] == "t" and "sweeps" not in sample["metas"]


def test_collect_requires_produced_keys():
    with pytest.raises(KeyError, match="gt_bboxes_3d"):
        Collect3D(["img", "gt_bboxes_3d"], [])({"img": torch.zeros(1)})
    with pytest.raises(KeyError, match="img_aug_matrix"):
        Collect3D(["img"], ["img_aug_matrix"])({"img": torch.zeros(1)})


def test_format_bundle_checks_labels_and_images():
    with pytest.raises(ValueError, match="gt_labels_3d"):
        formatted(labels=[0, 10])
    with pytest.raises(TypeError, match="ImageNormalize"):
        DefaultFormatBundle3D(CLASSES)({"img": [Image.new("RGB", (4, 4))]})


def test_collate_stacks_tensors_and_lists_the_rest():
    batch = collate([formatted(2), formatted(0)])
    assert batch["img"].shape == (2, 6, 3, 16, 32)
    assert batch["lidar2image"].shape == (2, 6, 4, 4) and batch["lidar_aug_matrix"].shape == (2, 4, 4)
    assert [len(b) for b in batch["gt_bboxes_3d"]] == [2, 0] and len(batch["points"]) == 2
    assert [m["token"] for m in batch["metas"]] == ["t", "t"]
    with pytest.raises(ValueError, match="keys"):
        collate([formatted(), {"img": torch.zeros(6, 3, 16, 32)}])
    with pytest.raises(ValueError, match="empty"):
        collate([])
    assert FUNCTIONS.get("simdistill_collate") is collate


def test_collate_rejects_mismatched_image_sizes():
    other = formatted()
    other["img"] = torch.zeros(6, 3, 8, 32)
    with pytest.raises(ValueError, match="'img'"):
        collate([formatted(), other])
