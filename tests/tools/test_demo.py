"""``tools/demo.py`` end to end at the smallest scale: 10 generated scenes of 2 key frames, one epoch per model."""
import glob
import json
import os

import pytest

from helpers.tools import load_tool


@pytest.mark.slow
def test_demo_runs_the_loop_and_says_what_its_numbers_mean(tmp_path, capfd):
    data, run = tmp_path / "data", tmp_path / "run"
    demo = load_tool("demo")
    assert demo.main(["--data-dir", str(data), "--run-dir", str(run), "--frames-per-scene", "2",
                      "--teacher-epochs", "1", "--student-epochs", "1", "--vis-samples", "1"]) == 0
    printed = capfd.readouterr().out

    with open(run / "results.json") as f:
        results = json.load(f)
    assert results["oracle"] == {"mAP": pytest.approx(1.0), "NDS": pytest.approx(1.0)}
    for name in ("teacher", "baseline", "simdistill"):
        assert 0.0 <= results[name]["mAP"] <= 1.0 and 0.0 <= results[name]["NDS"] <= 1.0
        assert results[name]["mAP"] == results["details"][name]["mAP"]
        assert (run / name / "latest.pth").is_file()
    # 8 train / 2 val scenes (the mini splits) x 2 frames; batch 2, one epoch: 8 iterations each
    assert results["scale"] == {"train_frames": 16, "val_frames": 4, "batch_size": 2,
                                "iterations": {"teacher": 8, "baseline": 8, "simdistill": 8}}
    assert "what these numbers mean: 16 training frames, 8 iterations for the teacher and 8 for each student" in printed
    assert glob.glob(os.path.join(run, "vis", "*.png"))
