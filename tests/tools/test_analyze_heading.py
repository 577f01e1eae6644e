"""``tools/analyze_heading.py`` end to end on the real frame with a random model."""
import json
import os

import torch

from helpers.tools import load_tool
from test_visualize import REPO, one_thread, real_data_args, write_real_frame_infos  # noqa: F401

CAMERA_LSS = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")


def random_checkpoint(tmp_path, root):
    import mmdet3d.models  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.config import load_config

    torch.manual_seed(0)
    path = tmp_path / "random.pth"
    torch.save({"state_dict": MODELS.build(load_config(CAMERA_LSS, real_data_args(root)).model).state_dict()}, path)
    return str(path)


def test_cli_counts_every_box_with_a_match(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    out = tmp_path / "heading.json"
    code = load_tool("analyze_heading").main([CAMERA_LSS, random_checkpoint(tmp_path, root), "--samples", "1",
                                              "--score-thr", "0", "--max-distance", "1000", "--json", str(out),
                                              *real_data_args(root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    classes = json.loads(out.read_text())["classes"]
    assert "barrier" not in classes and "traffic_cone" not in classes
    total = classes["all"]
    assert total["matched"] == sum(v["matched"] for k, v in classes.items() if k != "all") > 0
    assert abs(total["right"] + total["flipped"] + total["off_axis"] - 1) < 1e-9
    assert "off axis" in captured.out


def test_cli_says_when_nothing_matches(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    code = load_tool("analyze_heading").main([CAMERA_LSS, random_checkpoint(tmp_path, root), "--samples", "1",
                                              "--score-thr", "2", *real_data_args(root)])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and err.startswith("analyze_heading.py: error:") and "score 2" in err
