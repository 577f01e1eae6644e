"""``tools/analyze_depth.py`` end to end on the real frame."""
import json
import os

import torch

from helpers.tools import load_tool
from test_visualize import REPO, one_thread, real_data_args, write_real_frame_infos  # noqa: F401

CAMERA_LSS = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")


def test_cli_scores_a_random_camera_model_near_uniform(tmp_path, capsys):
    import mmdet3d.models  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.config import load_config

    root = write_real_frame_infos(tmp_path / "data")
    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pth"
    torch.save({"state_dict": MODELS.build(load_config(CAMERA_LSS, real_data_args(root)).model).state_dict()},
               checkpoint)
    out = tmp_path / "depth.json"
    code = load_tool("analyze_depth").main([CAMERA_LSS, str(checkpoint), "--samples", "1", "--json", str(out),
                                            *real_data_args(root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    result = json.loads(out.read_text())
    assert result["cells"] > 100 and "P(LiDAR bin)" in captured.out
    # random 1x1 depth logits give a nearly flat distribution
    assert 0.5 < result["p_lidar_bin"] / result["uniform_p_lidar_bin"] < 2


def test_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    assert load_tool("analyze_depth").main([CAMERA_LSS, str(tmp_path / "none.pth"), *real_data_args(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "none.pth" in err


def test_probe_fits_the_lidar_bins_of_features_that_hold_them():
    """Features that are the one-hot LiDAR bins themselves: a linear probe learns to read them off."""
    from mmdet3d.analysis.depth_quality import depth_quality, fit_depth_probe

    g = torch.Generator().manual_seed(0)
    target = torch.nn.functional.one_hot(torch.randint(0, 6, (40, 4, 5), generator=g), 6).permute(0, 3, 1, 2).float()
    target[:, :, 0] = 0  # cells without a point are ignored
    probe = fit_depth_probe(target * 4.0, target, convs=0, steps=200, batch=8, lr=5e-2)
    with torch.no_grad():
        scores = depth_quality(probe(target * 4.0).softmax(1), target, torch.arange(1.0, 7.0))
    assert scores["p_lidar_bin"] > 0.9 and scores["uniform_p_lidar_bin"] == 1 / 6


def test_cli_probes_the_pretrained_features(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    out = tmp_path / "probe.json"
    args = [CAMERA_LSS, "none", "--samples", "1", "--probe", "0,1", "--probe-samples", "1", "--probe-steps", "3",
            "--json", str(out), *real_data_args(root), "--data.train.ann_file",
            os.path.join(root, "nuscenes_infos_val.pkl")]
    code = load_tool("analyze_depth").main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    probes = json.loads(out.read_text())["probes"]
    assert set(probes) == {"0", "1"} and set(probes["1"]) == {"train", "val"}
    assert all(0 < s["p_lidar_bin"] < 1 for p in probes.values() for s in p.values())
    assert "depth probes fitted on 1 train samples" in captured.out
    assert load_tool("analyze_depth").main([CAMERA_LSS, "none", "--probe", "a,b", *real_data_args(root)]) == 2
    assert "--probe" in capsys.readouterr().err


def test_cli_refuses_a_bevformer_student_in_one_line(tmp_path, capsys):
    """BEVFormer samples image features at 3D reference points: it has no depth distribution to score."""
    root = write_real_frame_infos(tmp_path / "data")
    config = os.path.join(REPO, "configs", "synthetic", "det", "simdistill_bevformer.yaml")
    assert load_tool("analyze_depth").main([config, "none", "--samples", "1", *real_data_args(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "BEVFormerEncoder predicts no depth distribution" in err
