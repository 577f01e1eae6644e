"""Latency timing: the stage timer on a toy model with known sleeps, the fabricated batch against the real pipeline,
and ``tools/benchmark.py`` end to end (no assertions on how fast anything is)."""
import json
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from mmdet3d.analysis import benchmark as bench
from test_visualize import (REPO, TINY, load_tool, one_thread, real_data_args, real_meta,  # noqa: F401 (fixture)
                            tiny_config, write_real_frame_infos)

SLEEP_S = {"backbone": 0.02, "neck": 0.01, "decoder": 0.005, "head": 0.01, "decode": 0.015}


class Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        time.sleep(self.seconds)
        return x * self.scale


class SleepHead(Sleep):
    def get_bboxes(self, preds, metas=None):
        time.sleep(SLEEP_S["decode"])
        return [{"boxes_3d": preds}]


class ToyDetector(nn.Module):
    """BEVFusion's module names; the neck runs twice per call, ``trans_student`` never at inference."""

    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleDict({"camera": nn.ModuleDict({"backbone": Sleep(SLEEP_S["backbone"]),
                                                                "neck": Sleep(SLEEP_S["neck"])})})
        self.trans_student = Sleep(1.0)
        self.decoder = nn.ModuleDict({"backbone": Sleep(SLEEP_S["decoder"]), "neck": nn.Identity()})
        self.heads = nn.ModuleDict({"object": SleepHead(SLEEP_S["head"])})

    def forward(self, mode, img, **_):
        camera = self.encoders["camera"]
        x = camera["neck"](camera["neck"](camera["backbone"](img)))
        x = self.decoder["neck"](self.decoder["backbone"](x))
        head = self.heads["object"]
        return head.get_bboxes(head(x))


def test_stage_timer_attributes_time_to_the_modules_that_ran():
    model = ToyDetector()
    rows, totals = bench.time_breakdown(model, {"img": torch.ones(2)}, iters=2, precision="fp32", device="cpu")
    assert [(r["stage"], r["module"]) for r in rows] == [
        ("camera backbone", "encoders.camera.backbone"), ("camera neck", "encoders.camera.neck"),
        ("decoder backbone", "decoder.backbone"), ("decoder neck", "decoder.neck"),
        ("head forward", "heads.object"), ("decoding + NMS", "heads.object.get_bboxes")]
    by_module = {r["module"]: r["mean_ms"] for r in rows}
    assert by_module["encoders.camera.backbone"] >= 1e3 * SLEEP_S["backbone"]
    assert by_module["encoders.camera.neck"] >= 2e3 * SLEEP_S["neck"]  # two calls per iteration add up
    assert by_module["heads.object"] >= 1e3 * SLEEP_S["head"]
    assert by_module["heads.object.get_bboxes"] >= 1e3 * SLEEP_S["decode"]
    assert len(totals) == 2 and sum(by_module.values()) <= np.mean(totals)
    assert all(0 < r["share"] < 1 for r in rows)
    # The hooks and the method wrapper are gone afterwards.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert "get_bboxes" not in vars(model.heads["object"])


def test_parameters_used_counts_only_modules_that_run():
    model = ToyDetector()
    used = bench.parameters_used(model, {"img": torch.ones(2)}, "fp32", "cpu")
    assert used == 4  # backbone, neck, decoder backbone, head; not trans_student


def test_summarize_matches_hand_values():
    stats = bench.summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert stats["mean"] == 5.5 and stats["median"] == 5.5 and stats["p90"] == pytest.approx(9.1)
    assert stats["min"] == 1.0 and stats["max"] == 10.0
    with pytest.raises(ValueError):
        bench.summarize([])


def test_simdistill_inference_times_only_the_student():
    import mmdet3d.models  # noqa: F401
    from helpers.fake_batch import make_batch
    from mmdet3d.registry import MODELS

    model = MODELS.build(tiny_config("simdistill.yaml").model).eval()
    stages = bench.inference_stages(model)
    assert {"encoders.lidar.backbone", "fuser", "heads.object"} <= {s.path for s in stages}
    rows, _ = bench.time_breakdown(model, make_batch(1), iters=1, precision="fp32", device="cpu")
    modules = [r["module"] for r in rows]
    assert modules == ["encoders_student.camera.backbone", "encoders_student.camera.neck",
                       "encoders_student.camera.vtransform", "encoders_student.camera.vtransform2", "deformAttn",
                       "fuser_student", "decoder_student.backbone", "decoder_student.neck", "heads_student.object",
                       "heads_student.object.get_bboxes"]


def test_fabricated_batch_has_the_real_pipelines_layout(tmp_path):
    import mmdet3d.datasets  # noqa: F401
    from mmdet3d.datasets import collate
    from mmdet3d.registry import DATASETS

    cfg = tiny_config("camera_lss.yaml", *real_data_args(write_real_frame_infos(tmp_path))[len(TINY):])
    real = collate([DATASETS.build(cfg.data.val)[0]])
    fake = bench.fabricated_batch(list(cfg.image_size), list(cfg.point_cloud_range), batch_size=1,
                                  sweeps=cfg.sweeps_num, source_size=(900, 1600))
    assert set(fake) == set(real)
    for key, value in real.items():
        if isinstance(value, torch.Tensor):
            assert fake[key].shape == value.shape and fake[key].dtype == value.dtype, key
        else:
            assert len(fake[key]) == len(value), key
    assert fake["points"][0].shape[1] == real["points"][0].shape[1]
    assert torch.allclose(fake["img_aug_matrix"], real["img_aug_matrix"], atol=1e-5)
    assert torch.allclose(fake["lidar2image"], fake["camera_intrinsics"] @ fake["lidar2camera"], atol=1e-4)
    # Each fabricated camera looks within 15 degrees of where the real one does.
    meta = real_meta()
    for cam, c2l in zip(("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                         "CAM_BACK_RIGHT"), fake["camera2lidar"][0].numpy()):
        real_axis = np.linalg.inv(np.asarray(meta["cameras"][cam]["lidar2cam"]))[:3, 2]
        assert np.degrees(np.arccos(np.clip(real_axis @ c2l[:3, 2], -1, 1))) < 15, cam
    pcr = np.asarray(cfg.point_cloud_range)
    points = fake["points"][0].numpy()
    assert ((points[:, :3] >= pcr[:3]) & (points[:, :3] < pcr[3:])).all() and len(points) > 1000


def run_benchmark(args, capsys):
    code = load_tool("benchmark").main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return captured.out


def check_result(result, iters):
    total = result["breakdown"]["total_ms"]
    modules = result["breakdown"]["modules"]
    assert modules and all(0 <= m["mean_ms"] <= total for m in modules)
    assert sum(m["mean_ms"] for m in modules) <= total
    assert result["breakdown"]["other_ms"] == pytest.approx(total - sum(m["mean_ms"] for m in modules))
    latency = result["latency_ms"]
    assert len(latency["iterations"]) == iters
    assert latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]


def test_cli_on_a_fabricated_batch_writes_protocol_and_breakdown(tmp_path, capsys):
    out = tmp_path / "bench.json"
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    printed = run_benchmark([config, "--iters", "2", "--warmup", "1", "--device", "cpu", "--precision", "bf16",
                             "--json", str(out),
                             "--dataset_root", str(tmp_path / "absent") + os.sep] + TINY, capsys)
    result = json.loads(out.read_text())
    protocol = result["protocol"]
    assert protocol["batch_size"] == 1 and protocol["precision"] == "bf16 (torch.autocast)"
    assert protocol["warmup_iters"] == 1 and protocol["timed_iters"] == 2
    assert protocol["device"].startswith("cpu") and torch.__version__ in protocol["torch"]
    assert protocol["data"].startswith("fabricated") and "decoded boxes" in protocol["timed"]
    assert protocol["input_shapes"]["img"] == [1, 6, 3, 32, 88]
    assert 0 < protocol["parameters_used_at_inference"] <= protocol["parameters_total"]
    check_result(result, iters=2)
    stages = [m["stage"] for m in result["breakdown"]["modules"]]
    assert stages == ["camera backbone", "camera neck", "view transform", "decoder backbone", "decoder neck",
                      "head forward", "decoding + NMS"]
    assert printed.index("benchmark protocol") < printed.index("latency (ms")
    assert "per-module breakdown" in printed and "decoding + NMS" in printed


def test_cli_times_a_real_batch_of_the_lidar_camera_teacher(tmp_path, capsys):
    out = tmp_path / "bench.json"
    root = write_real_frame_infos(tmp_path / "data")
    config = os.path.join(REPO, "configs", "synthetic", "det", "teacher.yaml")
    run_benchmark([config, "--iters", "2", "--warmup", "0", "--batch-size", "2", "--json", str(out)]
                  + real_data_args(root), capsys)
    result = json.loads(out.read_text())
    assert result["protocol"]["data"].startswith("real") and result["protocol"]["batch_size"] == 2
    assert result["protocol"]["input_shapes"]["img"][0] == 2 and result["protocol"]["precision"] == "fp32"
    check_result(result, iters=2)
    stages = {m["stage"] for m in result["breakdown"]["modules"]}
    assert {"LiDAR voxelize", "LiDAR sparse encoder", "fuser", "view transform"} <= stages


def test_cli_rejects_bad_arguments_in_one_line(capsys):
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    assert load_tool("benchmark").main([config, "--iters", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--iters" in err
