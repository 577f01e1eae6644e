"""The BEVFormer student configs (VARIANTS.md B.1, B.2 items 1/2/4/5, B.5): numbers instead of strings, the
teacher's global geometry untouched, the student parts and optimisation, and (slow) the paper-size build."""
import os

import pytest
import torch

from mmdet3d.apis.optim import build_optim_wrapper_cfg, build_param_scheduler_cfgs
from mmdet3d.models.fusion_models.simdistill import check_same_grid, student_camera_config
from mmdet3d.registry import MODELS
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAMERA = os.path.join(REPO, "configs", "nuscenes", "det", "centerhead", "lssfpn", "camera", "256x704")
BEVFORMER = os.path.join(CAMERA, "bevformer")
SYNTHETIC = os.path.join(REPO, "configs", "synthetic", "det")


def real_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.parametrize("name", ["convfuser.yaml", "baseline.yaml"])
def test_paper_configs_numbers_and_geometry(name):
    cfg = load_config(os.path.join(BEVFORMER, name))
    swint = load_config(os.path.join(CAMERA, "swint", "convfuser.yaml"))
    assert cfg.point_cloud_range == swint.point_cloud_range == [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
    assert cfg.voxel_size == swint.voxel_size == [0.075, 0.075, 0.2]
    for sensor in ("camera", "lidar"):   # the teacher is the Swin-T run's
        assert cfg.model.encoders[sensor] == swint.model.encoders[sensor], sensor
    student = cfg.model.encoders_student.camera
    backbone, neck, encoder = student.backbone, student.neck, student.vtransform
    assert (backbone.type, backbone.depth, backbone.style, backbone.frozen_stages, backbone.norm_eval) == (
        "ResNet", 101, "caffe", 1, True)
    assert backbone.stage_with_dcn == [False, False, True, True] and backbone.dcn.deform_groups == 1
    assert (neck.type, neck.in_channels, neck.out_channels, neck.num_outs, neck.add_extra_convs) == (
        "FPN", [512, 1024, 2048], 256, 4, "on_output")
    assert encoder.type == "BEVFormerEncoder"
    for key in ("embed_dims", "ffn_dims", "num_layers", "bev_h", "bev_w", "out_channels", "dropout"):
        assert real_number(encoder[key]), key
    assert (encoder.embed_dims, encoder.ffn_dims, encoder.num_layers, encoder.num_levels) == (256, 512, 6, 4)
    assert (encoder.bev_h, encoder.bev_w, encoder.out_channels) == (180, 180, 80)
    assert encoder.bev_pc_range == [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0] and encoder.image_size == [256, 704]
    assert cfg.model.temporal is False and cfg.model.bevformer_checkpoint is None
    assert cfg.data.train.dataset.with_prev_frame is False and cfg.data.test.with_prev_frame is False
    # the camera branch is the teacher's transform made camera-only, on the same grid as the BEVFormer branch
    camera = student_camera_config(cfg.model.encoders.camera, False, student)
    assert camera["vtransform2"]["type"] == "LSSTransform" and camera["vtransform"]["type"] == "BEVFormerEncoder"
    check_same_grid(MODELS.build(camera["vtransform"]), camera["vtransform2"])
    distilled = name == "convfuser.yaml"
    assert cfg.model.encoders.fusion_feature == cfg.model.encoders.bev_DeformAttn == distilled


def test_paper_optimisation_is_numeric():
    cfg = load_config(os.path.join(BEVFORMER, "convfuser.yaml"))
    assert cfg.optimizer.lr == 2e-4 and real_number(cfg.optimizer.lr)
    assert cfg.optimizer.paramwise_cfg.custom_keys["encoders_student.camera.backbone"] == {"lr_mult": 0.1}
    lr = cfg.lr_config
    assert lr.policy == "CosineAnnealing" and lr.warmup == "linear"
    assert real_number(lr.warmup_ratio) and lr.warmup_ratio == pytest.approx(1 / 3)
    assert real_number(lr.min_lr_ratio) and lr.min_lr_ratio == 1e-3
    assert set(lr) == {"policy", "warmup", "warmup_iters", "warmup_ratio", "min_lr_ratio"}   # no cyclic leftovers
    assert cfg.momentum_config is None
    assert build_optim_wrapper_cfg(cfg)["clip_grad"]["max_norm"] == 35
    (scheduler,) = build_param_scheduler_cfgs(cfg)
    assert scheduler["type"] == "MMCVCosineAnnealingLR" and scheduler["warmup_ratio"] == pytest.approx(1 / 3)


def test_pretrained_keys_reach_their_own_backbone():
    config = os.path.join(BEVFORMER, "convfuser.yaml")
    cfg = load_config(config, ["--pretrained_r101_dcn", "/weights/r101_dcn_fcos3d_pretrain.pth",
                               "--pretrained_bevformer", "/weights/bevformer_r101_dcn_24ep.pth"])
    assert cfg.model.encoders_student.camera.backbone.init_cfg == {
        "type": "Pretrained", "checkpoint": "/weights/r101_dcn_fcos3d_pretrain.pth"}
    assert cfg.model.bevformer_checkpoint == "/weights/bevformer_r101_dcn_24ep.pth"
    assert cfg.model.encoders.camera.backbone.init_cfg is None
    cfg = load_config(config, ["--pretrained_camera", "/weights/swint.pth"])
    assert cfg.model.encoders.camera.backbone.init_cfg == {"type": "Pretrained", "checkpoint": "/weights/swint.pth"}
    assert cfg.model.encoders_student.camera.backbone.init_cfg is None


@pytest.mark.parametrize("name", ["simdistill_bevformer.yaml", "baseline_bevformer.yaml"])
def test_small_configs_keep_the_small_schedule_and_match_the_teachers_grid(name):
    cfg = load_config(os.path.join(SYNTHETIC, name))
    small = load_config(os.path.join(SYNTHETIC, "simdistill.yaml"))
    assert cfg.optimizer == small.optimizer and cfg.lr_config == small.lr_config
    assert cfg.point_cloud_range == small.point_cloud_range and cfg.voxel_size == small.voxel_size
    student = cfg.model.encoders_student.camera
    assert student.backbone.depth == 18 and student.backbone.stage_with_dcn == [False, False, False, True]
    assert student.vtransform.embed_dims == student.neck.out_channels == cfg.camera_vtransform.in_channels == 64
    assert (student.vtransform.bev_h, student.vtransform.bev_w, student.vtransform.num_layers) == (90, 90, 1)
    camera = student_camera_config(cfg.model.encoders.camera, False, student)
    check_same_grid(MODELS.build(camera["vtransform"]), camera["vtransform2"])
    assert cfg.model.encoders.camera.backbone == small.model.encoders.camera.backbone   # the teacher is unchanged


@pytest.mark.slow  # builds the Swin-T teacher and the ResNet-101-DCN + 6-layer BEVFormer student (~10 s, 1.3 GB)
def test_paper_size_student_builds():
    model = MODELS.build(load_config(os.path.join(BEVFORMER, "convfuser.yaml")).model.to_dict())
    camera = model.encoders_student.camera
    assert type(camera.backbone.layer3[22].conv2).__name__ == "ModulatedDeformConv2d"
    assert camera.vtransform.bev_embedding.weight.shape == (180 * 180, 256)
    assert type(camera.vtransform2).__name__ == "LSSTransform" and camera.vtransform2.in_channels == 256
    assert model.deformAttn is not None and isinstance(model.fuser_student, torch.nn.Module)
