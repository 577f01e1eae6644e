"""Loading transforms: images, key-frame points, sweeps, annotations; bad files fail in one line naming the file."""
import glob
import os

import numpy as np
import pytest
from PIL import Image

from mmdet3d.datasets.pipelines import (LoadAnnotations3D, LoadMultiViewImageFromFiles, LoadPointsFromFile,
                                        LoadPointsFromMultiSweeps)

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
LIDAR_FILE = glob.glob(os.path.join(DATA, "*LIDAR_TOP*.pcd.bin"))[0]
CAMERA_FILES = sorted(glob.glob(os.path.join(DATA, "*__CAM_*.jpg")))


def write_points(path, points):
    np.asarray(points, dtype=np.float32).tofile(path)
    return str(path)


def assert_one_line_naming(excinfo, name):
    message = str(excinfo.value)
    assert name in message and "\n" not in message


# ---------------------------------------------------------------- images

def test_images_load_as_rgb_pil_with_shapes():
    results = LoadMultiViewImageFromFiles(to_float32=True)({"image_paths": CAMERA_FILES})
    assert len(results["img"]) == 6
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (1600, 900) for im in results["img"])
    assert results["ori_shape"] == [(900, 1600)] * 6 == results["img_shape"]
    with Image.open(CAMERA_FILES[0]) as im:
        np.testing.assert_array_equal(np.asarray(results["img"][0]), np.asarray(im.convert("RGB")))


def test_images_keep_their_own_size(tmp_path):
    paths = []
    for i, size in enumerate([(40, 30), (32, 24)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("L", size, color=100).save(paths[-1])
    results = LoadMultiViewImageFromFiles()({"image_paths": paths})
    assert results["ori_shape"] == [(30, 40), (24, 32)]
    assert results["img"][1].mode == "RGB" and results["img"][1].getpixel((0, 0)) == (100, 100, 100)


def test_missing_image_names_the_file(tmp_path):
    missing = str(tmp_path / "CAM_FRONT" / "nothing.jpg")
    with pytest.raises(FileNotFoundError) as excinfo:
        LoadMultiViewImageFromFiles()({"image_paths": CAMERA_FILES[:2] + [missing]})
    assert_one_line_naming(excinfo, missing)


def test_unreadable_image_names_the_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError) as excinfo:
        LoadMultiViewImageFromFiles()({"image_paths": [str(broken)]})
    assert_one_line_naming(excinfo, str(broken))


def test_image_loader_needs_image_paths():
    with pytest.raises(KeyError, match="image_paths"):
        LoadMultiViewImageFromFiles()({})


# ---------------------------------------------------------------- key-frame points

def test_real_lidar_file_loads_all_points():
    points = LoadPointsFromFile("LIDAR", load_dim=5, use_dim=5)({"lidar_path": LIDAR_FILE})["points"]
    raw = np.fromfile(LIDAR_FILE, dtype=np.float32)
    assert points.dtype == np.float32 and points.shape == (34688, 5) == (raw.size // 5, 5)
    np.testing.assert_array_equal(points, raw.reshape(-1, 5))
    assert set(np.unique(points[:, 4])) <= set(range(32))  # ring index of the 32-beam sensor


def test_use_dim_list_and_count(tmp_path):
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = write_points(tmp_path / "p.pcd.bin", data)
    picked = LoadPointsFromFile("LIDAR", 5, [0, 1, 2, 4])({"lidar_path": path})["points"]
    np.testing.assert_array_equal(picked, data[:, [0, 1, 2, 4]])
    np.testing.assert_array_equal(LoadPointsFromFile("LIDAR", 5, 3)({"lidar_path": path})["points"], data[:, :3])


def test_empty_point_file_gives_no_points(tmp_path):
    path = write_points(tmp_path / "empty.pcd.bin", np.zeros((0, 5)))
    assert LoadPointsFromFile("LIDAR", 5, 5)({"lidar_path": path})["points"].shape == (0, 5)


def test_missing_lidar_file_names_it(tmp_path):
    missing = str(tmp_path / "samples" / "LIDAR_TOP" / "gone.pcd.bin")
    with pytest.raises(FileNotFoundError) as excinfo:
        LoadPointsFromFile("LIDAR", 5, 5)({"lidar_path": missing})
    assert_one_line_naming(excinfo, missing)


def test_truncated_lidar_file_names_it(tmp_path):
    path = write_points(tmp_path / "cut.pcd.bin", np.zeros(5 * 3 + 2))
    with pytest.raises(ValueError, match="not a whole number of points") as excinfo:
        LoadPointsFromFile("LIDAR", 5, 5)({"lidar_path": path})
    assert_one_line_naming(excinfo, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_name_the_file(tmp_path, bad):
    data = np.ones((6, 5), dtype=np.float32)
    data[3, 1] = bad
    path = write_points(tmp_path / "bad.pcd.bin", data)
    with pytest.raises(ValueError, match="1 of 6 points hold NaN or inf") as excinfo:
        LoadPointsFromFile("LIDAR", 5, 5)({"lidar_path": path})
    assert_one_line_naming(excinfo, path)


@pytest.mark.parametrize("kwargs", [
    dict(coord_type="DEPTH"),
    dict(load_augmented="mvp"),
    dict(reduce_beams=16),
    dict(use_dim=6),
    dict(use_dim=[0, 5]),
])
def test_point_loader_rejects_unsupported_args(kwargs):
    args = dict(coord_type="LIDAR", load_dim=5, use_dim=5) | kwargs
    with pytest.raises(ValueError):
        LoadPointsFromFile(**args)


def test_point_loader_accepts_the_original_config_args():
    loader = LoadPointsFromFile(coord_type="LIDAR", load_dim=5, use_dim=5, reduce_beams=32, load_augmented=None)
    assert loader.use_dim == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- sweeps

KEY_TIME = 1_000_000_000


def yaw_rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture
def sweep_set(tmp_path):
    """Key-frame points and six sweeps 50 ms apart, each with one close point and two far ones."""
    key = np.array([[0.2, 0.3, 0.0, 7.0, 31.0], [10.0, -4.0, 1.0, 9.0, 5.0]], dtype=np.float32)
    sweeps, clouds = [], []
    for i in range(6):
        cloud = np.array([[0.5, -0.5, 0.1, 1.0, 2.0],        # within 1 m in x and y: removed by remove_close
                          [0.5, 3.0 + i, 0.2, 2.0, 3.0],     # close in x only: kept
                          [20.0 + i, -1.0, -1.5, 3.0, 4.0]], dtype=np.float32)
        clouds.append(cloud)
        sweeps.append({
            "data_path": write_points(tmp_path / f"sweep{i}.pcd.bin", cloud),
            "timestamp": KEY_TIME - 50_000 * (i + 1),
            "sensor2lidar_rotation": yaw_rotation(0.1 * (i + 1)),
            "sensor2lidar_translation": np.array([0.5 * i, -0.2, 0.05]),
        })
    return key, sweeps, clouds


def expected_sweep(cloud, sweep, remove_close):
    if remove_close:
        cloud = cloud[~((np.abs(cloud[:, 0]) < 1) & (np.abs(cloud[:, 1]) < 1))]
    out = cloud.astype(np.float64).copy()
    for row in out:
        row[:3] = sweep["sensor2lidar_rotation"] @ row[:3] + sweep["sensor2lidar_translation"]
        row[4] = (KEY_TIME - sweep["timestamp"]) * 1e-6
    return out


def run_sweeps(key, sweeps, **kwargs):
    loader = LoadPointsFromMultiSweeps(**(dict(sweeps_num=9, load_dim=5, use_dim=5) | kwargs))
    return loader({"points": key.copy(), "sweeps": sweeps, "timestamp": KEY_TIME})["points"]


def test_sweeps_are_moved_into_the_key_frame_with_time_lags(sweep_set):
    key, sweeps, clouds = sweep_set
    points = run_sweeps(key, sweeps, remove_close=True)
    expected_key = key.copy()
    expected_key[:, 4] = 0
    expected = np.concatenate([expected_key] + [expected_sweep(c, s, True) for c, s in zip(clouds, sweeps)])
    assert points.dtype == np.float32 and points.shape == (2 + 6 * 2, 5)
    np.testing.assert_allclose(points, expected, atol=1e-5)
    assert points[0, 0] == pytest.approx(0.2)  # the key frame's own close points are kept, as in BEVFusion
    np.testing.assert_allclose(np.unique(points[2:, 4]), 0.05 * np.arange(1, 7), atol=1e-6)


def test_without_remove_close_every_sweep_point_is_kept(sweep_set):
    key, sweeps, clouds = sweep_set
    points = run_sweeps(key, sweeps, remove_close=False, use_dim=[0, 1, 2, 4])
    expected = np.concatenate([c for c in (expected_sweep(c, s, False) for c, s in zip(clouds, sweeps))])
    assert points.shape == (2 + 18, 4)
    np.testing.assert_allclose(points[2:], expected[:, [0, 1, 2, 4]], atol=1e-5)


def sweep_lags(points):
    return tuple(sorted(np.round(np.unique(points[points[:, 4] > 0, 4]) / 0.05).astype(int)))


def test_test_mode_takes_the_most_recent_sweeps_deterministically(sweep_set):
    key, sweeps, _ = sweep_set
    outcomes = set()
    for seed in range(5):
        np.random.seed(seed)
        outcomes.add(sweep_lags(run_sweeps(key, sweeps, sweeps_num=2, test_mode=True)))
    assert outcomes == {(1, 2)}


def test_train_mode_draws_random_sweeps_without_replacement(sweep_set):
    key, sweeps, _ = sweep_set
    outcomes = set()
    for seed in range(12):
        np.random.seed(seed)
        points = run_sweeps(key, sweeps, sweeps_num=3, remove_close=True)
        lags = sweep_lags(points)
        assert len(lags) == 3 and set(lags) <= set(range(1, 7)) and len(points) == 2 + 3 * 2
        outcomes.add(lags)
    assert len(outcomes) >= 4


def test_fewer_sweeps_than_requested_takes_all(sweep_set):
    key, sweeps, _ = sweep_set
    assert sweep_lags(run_sweeps(key, sweeps[:4], sweeps_num=9)) == (1, 2, 3, 4)


def test_empty_sweeps_repeat_the_key_frame_when_padding(sweep_set):
    key, _, _ = sweep_set
    padded = run_sweeps(key, [], sweeps_num=3, pad_empty_sweeps=True, remove_close=True)
    far = key[1:].copy()
    far[:, 4] = 0
    np.testing.assert_allclose(padded[2:], np.concatenate([far] * 3))
    assert padded.shape == (2 + 3, 5) and not padded[:, 4].any()
    assert run_sweeps(key, [], sweeps_num=3, pad_empty_sweeps=False).shape == (2, 5)


def test_missing_sweep_file_names_it(sweep_set, tmp_path):
    key, sweeps, _ = sweep_set
    gone = str(tmp_path / "sweeps" / "gone.pcd.bin")
    sweeps[2]["data_path"] = gone
    with pytest.raises(FileNotFoundError) as excinfo:
        run_sweeps(key, sweeps)
    assert_one_line_naming(excinfo, gone)


def test_sweeps_need_five_column_key_points(sweep_set):
    key, sweeps, _ = sweep_set
    with pytest.raises(ValueError, match="columns"):
        run_sweeps(key[:, :4], sweeps)


def test_sweeps_need_the_sweep_fields(sweep_set):
    key, sweeps, _ = sweep_set
    del sweeps[0]["sensor2lidar_rotation"]
    with pytest.raises(KeyError, match="sensor2lidar_rotation"):
        run_sweeps(key, sweeps)


# ---------------------------------------------------------------- annotations

def test_annotations_are_copied_with_dtypes():
    boxes = np.arange(18, dtype=np.float64).reshape(2, 9)
    results = LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": boxes, "gt_labels_3d": [3, -1], "gt_names": []}})
    assert results["gt_bboxes_3d"].dtype == np.float32 and results["gt_labels_3d"].dtype == np.int64
    np.testing.assert_array_equal(results["gt_bboxes_3d"], boxes)
    np.testing.assert_array_equal(results["gt_labels_3d"], [3, -1])


def test_frame_without_boxes_gives_empty_arrays():
    results = LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": np.zeros((0, 9)), "gt_labels_3d": []}})
    assert results["gt_bboxes_3d"].shape == (0, 9) and results["gt_labels_3d"].shape == (0,)
    results = LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": [], "gt_labels_3d": []}})
    assert results["gt_bboxes_3d"].shape == (0, 9)


def test_annotation_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[M, 9\]"):
        LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": np.zeros((2, 7)), "gt_labels_3d": [0, 1]}})
    with pytest.raises(ValueError, match="labels for"):
        LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": np.zeros((2, 9)), "gt_labels_3d": [0]}})
    with pytest.raises(ValueError, match="NaN or inf"):
        LoadAnnotations3D()({"ann_info": {"gt_bboxes_3d": np.full((1, 9), np.nan), "gt_labels_3d": [0]}})
    with pytest.raises(KeyError, match="attr_labels"):
        LoadAnnotations3D(with_attr_label=True)({"ann_info": {"gt_bboxes_3d": np.zeros((0, 9)),
                                                              "gt_labels_3d": []}})
