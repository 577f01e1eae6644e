"""``tools/export_onnx.py`` and ``tools/test.py --onnx`` as users run them, on the tiny generated dataset."""
import json
import os

import onnx
import pytest
import torch

from helpers.tools import load_tool
from helpers.batchnorm import calibrate_batchnorm
from helpers.fake_batch import TINY, tiny_config
from mmdet3d.registry import MODELS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "synthetic", "det")


def data_args(root):
    return TINY + ["--dataset_root", root, "--source_image_size", "[64, 112]"]


def checkpoint_of(config, overrides, path):
    import mmdet3d.models  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model = MODELS.build(tiny_config(config, *overrides).model.to_dict())
    if config != "lidar.yaml":
        calibrate_batchnorm(model)
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    args = data_args(synthetic_root)
    checkpoint = checkpoint_of("camera_lss.yaml", args[len(TINY):], folder / "model.pth")
    out = str(folder / "model.onnx")
    tool = load_tool("export_onnx")
    return tool, [os.path.join(CONFIGS, "camera_lss.yaml"), checkpoint, "--out", out] + args, checkpoint, out, args


def test_export_writes_a_checked_graph_and_reports_the_numerical_check(exported, capsys):
    tool, argv, _, out, _ = exported
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    onnx.checker.check_model(out)
    assert "opset 18, onnx.checker: ok" in printed
    (images,) = [line.split() for line in printed.splitlines() if line.strip().startswith("input")]
    assert images == ["input", "images", "[1,", "6,", "3,", "32,", "88]", "float32"]
    assert "output task5.vel" in printed
    assert "all outputs within 0.0001 relative" in printed
    assert "MiB" in printed and "camera rig and check sample:" in printed


def test_export_with_the_rig_as_inputs(exported, tmp_path, capsys):
    tool, argv, _, _, _ = exported
    out = str(tmp_path / "dynamic.onnx")
    at = argv.index("--out")
    assert tool.main(argv[:at + 1] + [out, "--dynamic-calibration"] + argv[at + 2:]) == 0
    printed = capsys.readouterr().out
    inputs = [line.split()[1] for line in printed.splitlines() if line.strip().startswith("input")]
    assert inputs == ["images", "img_aug_inverse", "pixel_to_lidar", "pixel_to_ego"]
    assert "camera rig: graph inputs" in printed and "all outputs within 0.0001 relative" in printed
    assert {p.key: p.value for p in onnx.load(out).metadata_props}["simdistill.camera_rig"] == "inputs"


def test_test_py_with_onnx_scores_as_the_pytorch_model(exported, tmp_path, capsys):
    tool, argv, checkpoint, out, args = exported
    if not os.path.isfile(out):
        assert tool.main(argv) == 0
    config = os.path.join(CONFIGS, "camera_lss.yaml")
    test = load_tool("test")
    common = ["--eval", "bbox", "--run-dir", str(tmp_path / "run")] + args
    assert test.main([config, checkpoint, "--out", str(tmp_path / "torch.json")] + common) == 0
    assert test.main([config, checkpoint, "--onnx", out, "--out", str(tmp_path / "onnx.json")] + common) == 0
    with open(tmp_path / "torch.json") as f, open(tmp_path / "onnx.json") as g:
        expected, got = json.load(f), json.load(g)
    assert expected["object/mAP"] > 0  # detections, not an empty result on both sides
    assert got.keys() == expected.keys()
    assert {k: round(v, 3) for k, v in got.items()} == {k: round(v, 3) for k, v in expected.items()}


def test_test_py_refuses_an_onnx_file_of_another_checkpoint(exported, tmp_path, capsys):
    tool, argv, checkpoint, out, args = exported
    if not os.path.isfile(out):
        assert tool.main(argv) == 0
    other = checkpoint_of("camera_lss.yaml", args[len(TINY):], tmp_path / "other.pth")
    with open(other, "ab") as f:
        f.write(b"\0")
    code = load_tool("test").main([os.path.join(CONFIGS, "camera_lss.yaml"), other, "--onnx", out,
                                   "--run-dir", str(tmp_path / "run")] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "was not exported from" in err and other in err


def test_benchmark_times_the_graph_beside_pytorch(exported, tmp_path, capsys):
    tool, argv, checkpoint, out, args = exported
    if not os.path.isfile(out):
        assert tool.main(argv) == 0
    result_file = tmp_path / "bench.json"
    code = load_tool("benchmark").main([os.path.join(CONFIGS, "camera_lss.yaml"), checkpoint, "--onnx", out,
                                        "--iters", "2", "--warmup", "1", "--device", "cpu", "--json",
                                        str(result_file)] + args)
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(result_file.read_text())
    onnx_result = result["onnx"]
    assert onnx_result["provider"] == "CPUExecutionProvider" and len(onnx_result["latency_ms"]["iterations"]) == 2
    assert onnx_result["pytorch_over_onnxruntime"] == pytest.approx(
        result["latency_ms"]["mean"] / onnx_result["latency_ms"]["mean"])
    assert "PyTorch / onnxruntime mean latency" in printed
    assert load_tool("benchmark").main([os.path.join(CONFIGS, "camera_lss.yaml"), "--onnx", out] + args) == 2
    assert "give CKPT" in capsys.readouterr().err


@pytest.mark.parametrize("case, expected", [
    ("missing checkpoint", "checkpoint not found: "),
    ("lidar model", "model.encoders.lidar: a model with a LiDAR encoder cannot be exported camera-only"),
    ("unknown calibration sample", "--calibration nope: no such sample in data.test"),
])
def test_bad_arguments_are_reported_in_one_line(case, expected, synthetic_root, tmp_path, capsys):
    args = data_args(synthetic_root)
    config, extra = "camera_lss.yaml", []
    checkpoint = str(tmp_path / "missing.pth")
    if case == "lidar model":
        config = "lidar.yaml"
        checkpoint = checkpoint_of(config, args[len(TINY):], tmp_path / "lidar.pth")
    elif case == "unknown calibration sample":
        checkpoint = checkpoint_of(config, args[len(TINY):], tmp_path / "model.pth")
        extra = ["--calibration", "nope"]
    code = load_tool("export_onnx").main([os.path.join(CONFIGS, config), checkpoint, "--out",
                                          str(tmp_path / "m.onnx")] + extra + args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("export_onnx.py: error: ") and expected in err
