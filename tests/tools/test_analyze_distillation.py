"""``tools/analyze_distillation.py`` end to end on the real frame: tables, JSON, and one-line errors."""
import json
import os

from helpers.tools import load_tool
from test_visualize import REPO, one_thread, real_data_args, write_real_frame_infos  # noqa: F401

SIMDISTILL = os.path.join(REPO, "configs", "synthetic", "det", "simdistill.yaml")


def test_cli_reports_every_loss_and_map(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    out = tmp_path / "analysis.json"
    code = load_tool("analyze_distillation").main([SIMDISTILL, "none", "--split", "val", "--samples", "1",
                                                    "--json", str(out), *real_data_args(root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    result = json.loads(out.read_text())
    assert set(result["losses"]) == {"object", "img_feature", "plidar_feature", "fusion_feature", "kd_cls", "kd_box"}
    assert set(result["alignment"]) == {"teacher camera", "teacher lidar", "teacher fused", "student sim-lidar",
                                        "student camera", "student fused"}
    for group, row in result["losses"].items():
        assert row["value"] > 0 and f"\n{group} " in captured.out
    assert result["losses"]["img_feature"]["grad_norm"]["heads_student"] == 0
    assert all(-1 <= c <= 1 for row in result["alignment"].values() for c in row.values())


def test_cli_rejects_a_model_without_a_student(capsys):
    config = os.path.join(REPO, "configs", "synthetic", "det", "teacher.yaml")
    assert load_tool("analyze_distillation").main([config, "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "SimDistill" in err


def test_tables_keep_every_column_apart():
    import re
    tool = load_tool("analyze_distillation")
    report = {"detection": {"value": 12.5, "grad_norm": {"encoders_student.camera.vtransform2": 1234.5678,
                                                         "decoder_student": 0.5}},
              "kd_box": {"value": 0.25, "grad_norm": {"encoders_student.camera.vtransform2": 1e-7,
                                                      "decoder_student": 3.0}}}
    lines = tool.format_gradients(report).splitlines()
    header, rows = lines[1], lines[3:]
    assert re.split(r"\s{2,}", header.strip()) == ["loss group", "value", "cam.vtransform2", "decoder"]
    for row in rows:
        assert len(re.split(r"\s{2,}", row.strip())) == 4 and len(row) == len(header)


def test_balance_prints_the_weights_of_the_balancing_rule(tmp_path, capsys):
    import shutil

    root = write_real_frame_infos(tmp_path / "data")
    shutil.copy(os.path.join(root, "nuscenes_infos_val.pkl"), os.path.join(root, "nuscenes_infos_train.pkl"))
    out = tmp_path / "analysis.json"
    code = load_tool("analyze_distillation").main([SIMDISTILL, "none", "--split", "train", "--samples", "1",
                                                    "--balance", "0.5", "--json", str(out), *real_data_args(root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    result = json.loads(out.read_text())
    module = "encoders_student.camera.backbone"
    assert result["balance"]["module"] == module and result["balance"]["fraction"] == 0.5
    detection = result["losses"]["object"]["grad_norm"][module]
    assert "balanced weight" in captured.out
    for group in ("img_feature", "plidar_feature", "fusion_feature", "kd_cls", "kd_box"):
        row = result["balance"]["groups"][group]
        norm = result["losses"][group]["grad_norm"][module]
        assert row["ratio"] == norm / detection
        if norm > 0:
            assert abs(row["balanced"] - row["weight"] * 0.5 * detection / norm) <= 1e-9 * row["balanced"]
        else:
            assert row["balanced"] is None


def test_balance_refuses_validation_data(capsys):
    assert load_tool("analyze_distillation").main([SIMDISTILL, "none", "--split", "val", "--balance", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--split train" in err
