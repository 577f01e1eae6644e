"""Same seed, same config -> the same loss curve on the CPU (a shrunk LiDAR-depth camera model on the tiny generated
dataset, with a DataLoader worker and every augmentation on)."""
import glob
import json
import os

from helpers.tools import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
TINY = ["--image_size", "[32, 88]", "--source_image_size", "[64, 112]",
        "--point_cloud_range", "[-12.0, -12.0, -5.0, 12.0, 12.0, 3.0]", "--voxel_size", "[0.3, 0.3, 0.2]",
        "--camera_vtransform.type", "DepthLSSTransform", "--evaluation.interval", "0",
        "--data.samples_per_gpu", "1", "--data.workers_per_gpu", "1", "--log_config.interval", "1",
        "--max_epochs", "2"]


def losses(run_dir):
    (path,) = glob.glob(os.path.join(run_dir, "*", "vis_data", "scalars.json"))
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if "loss" in r]


def train(run_dir, synthetic_root, *extra):
    argv = [CONFIG, "--run-dir", str(run_dir), "--dataset_root", synthetic_root, *TINY, *extra]
    assert load_tool("train").main(argv) == 0


def test_same_seed_same_loss_curve(synthetic_root, tmp_path):
    train(tmp_path / "a", synthetic_root)
    train(tmp_path / "b", synthetic_root)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) >= 20 and len(set(a)) == len(a)  # a real curve: every iteration's loss differs
    assert a == b
