"""Bad input through the tools, as a user meets it: each case exits non-zero with one line on stderr that names the
file or key, and leaves no run directory, checkpoint or output file half-written. On the tiny generated dataset of
``conftest.synthetic_root`` with a shrunk camera-only model (seconds per run)."""
import glob
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from helpers.tools import load_tool
from mmdet3d.datasets.pipelines import load_points_file

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
CAMERA = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
SIMDISTILL = os.path.join(REPO, "configs", "synthetic", "det", "simdistill.yaml")
TINY = ["--image_size", "[32, 88]", "--source_image_size", "[64, 112]",
        "--point_cloud_range", "[-12.0, -12.0, -5.0, 12.0, 12.0, 3.0]", "--voxel_size", "[0.3, 0.3, 0.2]",
        "--max_epochs", "1", "--evaluation.interval", "0", "--data.workers_per_gpu", "1", "--log_config.interval", "1"]


def tool(name):
    return load_tool(name).main


def error_line(capsys, tool_name):
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith(f"{tool_name}.py: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def dataset(synthetic_root, tmp_path):
    """A private copy of the tiny dataset (the cases break its files); the path is given without a trailing slash."""
    root = str(tmp_path / "data")
    shutil.copytree(synthetic_root, root)
    return root


def infos(root, split="train"):
    with open(os.path.join(root, f"nuscenes_infos_{split}.pkl"), "rb") as f:
        return pickle.load(f)["infos"]


def data_args(root):
    return ["--dataset_root", root]


def train(capsys, tmp_path, config, *args):
    run_dir = str(tmp_path / "run")
    rc = tool("train")([config, "--run-dir", run_dir, *TINY, *args])
    return rc, run_dir


def assert_no_checkpoint(run_dir):
    assert not glob.glob(os.path.join(run_dir, "*.pth")) and not glob.glob(os.path.join(run_dir, ".*.tmp"))


def test_simdistill_without_teacher_checkpoint(dataset, tmp_path, capsys):
    rc, run_dir = train(capsys, tmp_path, SIMDISTILL, *data_args(dataset))
    assert rc == 2 and "model.teacher_checkpoint is not set" in error_line(capsys, "train")
    assert not os.path.exists(run_dir)


@pytest.mark.parametrize("args,key", [(["--max_epochs", "-1"], "max_epochs"),
                                      (["--data.samples_per_gpu", "0"], "data.samples_per_gpu"),
                                      (["--optimizer.lr", "-0.001"], "optimizer.lr")])
def test_numbers_are_checked_before_anything_is_written(dataset, tmp_path, capsys, args, key):
    rc, run_dir = train(capsys, tmp_path, CAMERA, *data_args(dataset), *args)
    assert rc == 2 and f"{key} must be" in error_line(capsys, "train")
    assert not os.path.exists(run_dir)


def test_failing_expression_names_the_key(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text(f"_base_: {CAMERA}\nbroken: ${{image_size[7]}}\n")
    rc, run_dir = train(capsys, tmp_path, str(config))
    line = error_line(capsys, "train")
    assert rc == 2 and "key 'broken'" in line and "broken.yaml" in line
    assert not os.path.exists(run_dir)


def test_dataset_root_without_slash_joins_paths(dataset, tmp_path, capsys):
    """--dataset_root /x/data (no slash) finds /x/data/nuscenes_infos_train.pkl; the run trains."""
    rc, run_dir = train(capsys, tmp_path, CAMERA, *data_args(dataset), "--max_epochs", "1")
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert os.path.isfile(os.path.join(run_dir, "latest.pth"))


@pytest.mark.parametrize("case", ["deleted_image", "corrupt_jpeg", "truncated_points", "nan_points"])
def test_data_errors_in_loader_workers_are_one_line(dataset, tmp_path, capsys, case):
    """Every training sample's file is broken, so the first batch a DataLoader worker loads fails."""
    def absolute(path):
        return path if os.path.isabs(path) else os.path.join(dataset, path)

    for info in infos(dataset):
        if case in ("deleted_image", "corrupt_jpeg"):
            path = absolute(info["cams"]["CAM_FRONT"]["data_path"])
            if case == "deleted_image":
                os.remove(path)
            else:
                with open(path, "wb") as f:
                    f.write(b"\xff\xd8 not a jpeg")
        else:
            path = absolute(info["lidar_path"])
            points = np.fromfile(path, dtype=np.float32)
            if case == "truncated_points":
                with open(path, "wb") as f:
                    f.write(points.tobytes()[:-7])
            else:
                points[3] = np.nan
                points.tofile(path)
    expected = {"deleted_image": "camera image not found", "corrupt_jpeg": "cannot read the image",
                "truncated_points": "is not a whole number of points", "nan_points": "NaN or inf"}[case]
    # the LiDAR-depth camera model reads points
    extra = ["--camera_vtransform.type", "DepthLSSTransform"] if "points" in case else []
    rc, run_dir = train(capsys, tmp_path, CAMERA, *data_args(dataset), *extra)
    line = error_line(capsys, "train")
    suffix = ".pcd.bin" if "points" in case else ".jpg"
    assert rc == 2 and expected in line and suffix in line, line
    assert "Traceback" not in line and os.path.isfile(os.path.join(run_dir, "traceback.txt"))
    assert_no_checkpoint(run_dir)


@pytest.mark.parametrize("tail", [17, 7])
def test_point_file_size_is_checked_in_bytes(tmp_path, tail):
    """20 N - 17 bytes used to load silently as N - 1 points; the message names the file's own byte count."""
    path = tmp_path / "cloud.pcd.bin"
    data = np.arange(4 * 5, dtype=np.float32).tobytes()  # N = 4 points of 5 floats = 80 bytes
    path.write_bytes(data[:80 - tail])
    with pytest.raises(ValueError, match=rf"cloud.pcd.bin: {80 - tail} bytes is not a whole number of points"):
        load_points_file(str(path), 5)


def test_empty_point_cloud_and_frame_without_boxes_train(dataset, tmp_path, capsys):
    """Handled already: an empty LiDAR file and a frame with no boxes are valid input (the run trains)."""
    data = infos(dataset)
    first = data[0]
    path = first["lidar_path"] if os.path.isabs(first["lidar_path"]) else os.path.join(dataset, first["lidar_path"])
    open(path, "wb").close()
    first["gt_boxes"] = first["gt_boxes"][:0]
    for key in ("gt_names", "gt_velocity", "num_lidar_pts", "num_radar_pts", "valid_flag"):
        if key in first:
            first[key] = first[key][:0]
    ann = os.path.join(dataset, "nuscenes_infos_train.pkl")
    with open(ann, "rb") as f:
        content = pickle.load(f)
    content["infos"][0] = first
    with open(ann, "wb") as f:
        pickle.dump(content, f)
    rc, run_dir = train(capsys, tmp_path, CAMERA, *data_args(dataset), "--camera_vtransform.type",
                        "DepthLSSTransform")
    assert rc == 0, capsys.readouterr().err[-2000:]


def test_camera_only_evaluation_needs_no_lidar_files(dataset, tmp_path, capsys):
    """A camera-only model is evaluated with every LiDAR file of the split gone; a checkpoint of another model is a
    one-line error; an info file of another version too."""
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.config import load_config
    import mmdet3d.models  # noqa: F401
    overrides = TINY + data_args(dataset)
    cfg = load_config(CAMERA, overrides)
    ckpt = str(tmp_path / "camera.pth")
    torch.save({"state_dict": MODELS.build(cfg.model).state_dict()}, ckpt)
    for info in infos(dataset, "val"):
        for path in [info["lidar_path"]] + [s["data_path"] for s in info["sweeps"]]:
            path = path if os.path.isabs(path) else os.path.join(dataset, path)
            if os.path.exists(path):
                os.remove(path)
    out = str(tmp_path / "metrics.json")
    test = tool("test")
    rc = test([CAMERA, ckpt, "--eval", "bbox", "--out", out, "--run-dir", str(tmp_path / "t"), *overrides])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert os.path.isfile(out)
    capsys.readouterr()

    other = str(tmp_path / "lidar.pth")
    lidar_cfg = load_config(os.path.join(REPO, "configs", "synthetic", "det", "lidar.yaml"), overrides)
    torch.save({"state_dict": MODELS.build(lidar_cfg.model).state_dict()}, other)
    out2 = str(tmp_path / "metrics2.json")
    rc = test([CAMERA, other, "--eval", "bbox", "--out", out2, "--run-dir", str(tmp_path / "t2"), *overrides])
    assert rc == 2 and "lidar.pth" in error_line(capsys, "test") and not os.path.exists(out2)

    rc = test([CAMERA, ckpt, "--eval", "bbox", "--out", out2, "--run-dir", str(tmp_path / "t3"), *overrides,
               "--version", "v1.0-trainval"])
    line = error_line(capsys, "test")
    assert rc == 2 and "nuscenes_infos_val.pkl: info file of v1.0-mini" in line and not os.path.exists(out2)
