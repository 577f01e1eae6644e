"""``tools/analyze_depth.py`` end to end on the real frame."""
import json
import os

import torch

from test_visualize import REPO, load_tool, one_thread, real_data_args, write_real_frame_infos  # noqa: F401

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
