"""Latency timing: the stage timer on a toy model with known sleeps, the fabricated batch against the real pipeline,
and ``tools/benchmark.py`` end to end (no assertions on how fast anything is)."""
import json
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from helpers.tools import load_tool
from mmdet3d.analysis import benchmark as bench
from test_visualize import (REPO, TINY, one_thread, real_data_args, real_meta,  # noqa: F401 (fixture)
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
    # The process holds at least the fp32 weights; ru_maxrss is KiB on Linux, hence the MiB conversion.
    assert result["peak_memory"]["kind"] == "process peak RSS"
    assert result["peak_memory"]["mib"] >= protocol["parameters_total"] * 4 / 2 ** 20
    assert f"peak memory: {result['peak_memory']['mib']:.0f} MiB" in printed
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


# ------------------------------------------------------------------------------------------------ training step
class SleepLossHead(Sleep):
    def loss(self, x):
        time.sleep(SLEEP_S["decode"])
        return {"loss/object": (x * self.scale).sum()}


class ToyTrainable(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleDict({"camera": nn.ModuleDict({"backbone": Sleep(SLEEP_S["backbone"])})})
        self.decoder = nn.ModuleDict({"backbone": Sleep(SLEEP_S["decoder"])})
        self.heads = nn.ModuleDict({"object": SleepLossHead(SLEEP_S["head"])})

    def forward(self, mode, img, **_):
        assert mode == "loss"
        head = self.heads["object"]
        x = head(self.decoder["backbone"](self.encoders["camera"]["backbone"](img)))
        return {**head.loss(x), "loss/list": [x.sum(), 2 * x.sum()]}


def toy_optim_wrapper(model):
    from mmengine.optim import OptimWrapper

    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))


def test_training_step_phases_and_forward_stages():
    model = ToyTrainable()
    phases, rows, totals = bench.time_training_steps(model, {"img": torch.ones(2)}, toy_optim_wrapper(model),
                                                     iters=2, warmup=1, device="cpu")
    assert list(phases) == list(bench.TRAIN_PHASES) and all(len(ms) == 2 for ms in phases.values())
    assert totals == pytest.approx([sum(ms) for ms in zip(*phases.values())])
    by_stage = {r["stage"]: r["mean_ms"] for r in rows}
    assert list(by_stage) == ["camera backbone", "decoder backbone", "head forward", "head losses"]
    assert by_stage["camera backbone"] >= 1e3 * SLEEP_S["backbone"]
    assert by_stage["head losses"] >= 1e3 * SLEEP_S["decode"]
    forward = np.mean(phases["forward + losses"])
    assert sum(by_stage.values()) <= forward and forward >= 1e3 * sum(SLEEP_S[k] for k in
                                                                       ("backbone", "decoder", "head", "decode"))
    # Three steps (one warm-up) of SGD: each parameter moved by lr x its gradient every step.
    assert model.heads["object"].scale.item() != 1.0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert "loss" not in vars(model.heads["object"])


class LinearLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, mode, img):
        return {"loss/object": self.linear(img).sum()}


def test_training_flops_are_the_matmuls_of_forward_and_backward():
    model = LinearLoss()
    before = model.linear.weight.detach().clone()
    flops = bench.count_training_flops(model, {"img": torch.ones(5, 4)}, toy_optim_wrapper(model))
    # forward: a 5x4 by 4x3 product, 2 FLOPs per multiply-add; backward: only the weight's gradient (the input
    # needs none), the same product once more
    assert flops == {"forward": 2 * 5 * 4 * 3, "backward": 2 * 5 * 4 * 3, "total": 4 * 5 * 4 * 3}
    assert not torch.equal(model.linear.weight, before) and model.linear.weight.grad is None


def test_matmul_rate_is_the_flops_of_the_products_over_their_time(monkeypatch):
    clock = iter([10.0, 12.0])  # the timed loop takes 2 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    assert bench.matmul_rate("cpu", size=64, iters=5) == pytest.approx(2 * 64 ** 3 * 5 / 2.0 / 1e9)


def test_total_loss_sums_tensors_and_lists_as_mmengine():
    from mmengine.model import BaseModel

    losses = {"loss/a": torch.tensor([1.0, 3.0]), "loss/b": [torch.tensor(2.0), torch.tensor([4.0, 6.0])]}
    parsed, _ = BaseModel.parse_losses(None, losses)
    assert float(bench.total_loss(losses)) == pytest.approx(float(parsed)) == pytest.approx(2.0 + 2.0 + 5.0)


def test_simdistill_training_stages_name_teacher_and_student():
    import mmdet3d.models  # noqa: F401
    from mmdet3d.registry import MODELS

    model = MODELS.build(tiny_config("simdistill.yaml").model)
    labels = {s.path: s.label for s in bench.training_stages(model)}
    assert labels["encoders.lidar.backbone"] == "teacher: LiDAR sparse encoder"
    assert labels["encoders_student.camera.backbone"] == "student: camera backbone"
    assert labels["deformAttn"] == "student: GCM (deformable attention)"
    assert labels["heads_student.object.loss"] == "student: head losses"
    assert not any(path.endswith(".get_bboxes") for path in labels)


def test_cli_train_step_on_the_real_frame(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    config = os.path.join(REPO, "configs", "synthetic", "det", "simdistill.yaml")
    args = [config, "--train-step", "--iters", "1", "--warmup", "0", "--batch-size", "1"] + real_data_args(root) + [
        "--data.train.ann_file", os.path.join(root, "nuscenes_infos_val.pkl")]
    results = []
    for run in range(2):
        out = tmp_path / f"train{run}.json"
        printed = run_benchmark(args + ["--json", str(out)], capsys)
        results.append(json.loads(out.read_text()))
    result = results[0]
    assert result["protocol"]["model"] == "SimDistill" and result["protocol"]["data"].startswith("real")
    assert 0 < result["protocol"]["parameters_trained"] < result["protocol"]["parameters_total"]
    assert len(result["step_ms"]["iterations"]) == 1 and set(result["phases_ms"]) == set(bench.TRAIN_PHASES)
    stages = {m["stage"] for m in result["breakdown"]["modules"]}
    assert {"teacher: LiDAR sparse encoder", "student: camera backbone", "student: head losses"} <= stages
    assert result["data_loading_ms"]["mean"] > 0
    losses = result["first_step_losses"]
    assert {"loss/distill/img_feature", "loss/object/heatmap/task0"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    # The fixed batch and the seeded model give the same losses every run: the check a speed change must pass.
    assert losses == results[1]["first_step_losses"]
    assert "per-module forward time" in printed and "first-step losses" in printed
    flops = result["flops_per_step"]
    assert flops["forward"] > 0 and flops["backward"] > 0 and flops["total"] == flops["forward"] + flops["backward"]
    assert flops["gflop_per_s"] == pytest.approx(flops["total"] / result["step_ms"]["mean"] / 1e6)
    assert flops["share_of_matmul_rate"] == pytest.approx(flops["gflop_per_s"] / flops["matmul_gflop_per_s"])
    assert "GFLOP per step" in printed


def test_cli_train_step_rejects_mixed_precision_in_one_line(capsys):
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    assert load_tool("benchmark").main([config, "--train-step", "--precision", "bf16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--precision bf16" in err and "needs CUDA" in err
