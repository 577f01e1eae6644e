"""The ViTAEv2-S student configs (VARIANTS.md A.1, V3) and the teacher/student camera backbones as independent keys."""
import os

import pytest
import torch

import mmdet3d.models.fusion_models.simdistill as simdistill
from mmdet3d.apis.optim import build_optim_wrapper_cfg
from mmdet3d.registry import MODELS
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LSSFPN = os.path.join(REPO, "configs", "nuscenes", "det", "centerhead", "lssfpn")
CAMERA = os.path.join(LSSFPN, "camera", "256x704")
VITAEV2 = os.path.join(CAMERA, "vitaev2")
SWIN_TEACHER = os.path.join(LSSFPN, "camera+lidar", "swint", "convfuser.yaml")
# A thin Swin teacher (embed 24), quick to build on a CPU; the ViTAEv2-S student stays full size.
THIN_SWIN = ["--swint_backbone.embed_dims", "24", "--camera_neck.in_channels", "[48, 96, 192]"]
STUDENT_CONFIGS = [os.path.join(CAMERA, folder, name) for folder in ("swint", "resnet50", "vitaev2")
                   for name in ("convfuser.yaml", "baseline.yaml")] + [os.path.join(VITAEV2, "convfuser_official.yaml")]
VITAEV2_S = dict(type="ViTAEv2", token_dims=[64, 128, 256, 512], embed_dims=[64, 64, 128, 256],
                 downsample_ratios=[4, 2, 2, 2], NC_depth=[2, 2, 8, 2], NC_heads=[1, 2, 4, 8], RC_heads=[1, 1, 2, 4],
                 NC_group=[1, 32, 64, 128], RC_group=[1, 16, 32, 64], window_size=7, drop_path_rate=0.2,
                 out_indices=[1, 2, 3], frozen_stages=-1, use_checkpoint=False, load_ema=True, init_cfg=None,
                 RC_tokens_type=["window", "window", "transformer", "transformer"],
                 NC_tokens_type=["window", "window", "transformer", "transformer"])


@pytest.mark.parametrize("name", ["convfuser.yaml", "baseline.yaml", "convfuser_official.yaml"])
def test_vitaev2_student_with_the_swin_t_teacher(name):
    model = load_config(os.path.join(VITAEV2, name)).model
    assert model.type == "SimDistill"
    student, teacher = model.encoders_student.camera, model.encoders.camera
    for key, value in VITAEV2_S.items():
        assert student.backbone[key] == value, key
    assert student.neck.type == "GeneralizedLSSFPN"
    assert student.neck.in_channels == [128, 256, 512] and student.neck.out_channels == 256
    assert teacher.backbone.type == "SwinTransformer" and teacher.backbone.embed_dims == 96
    assert teacher.neck.in_channels == [192, 384, 768]
    distilled = name != "baseline.yaml"
    assert model.encoders.fusion_feature == model.encoders.plidar_feature == model.encoders.bev_DeformAttn == distilled


def test_official_optimisation_settings():
    cfg = load_config(os.path.join(VITAEV2, "convfuser_official.yaml"))
    flags = cfg.model.encoders
    assert (flags.img_feature, flags.prediction_distill) == (False, False)
    assert (flags.fusion_feature, flags.plidar_feature, flags.plidar_mask, flags.bev_DeformAttn) == (True,) * 4
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.lr == 5e-6 and cfg.optimizer.weight_decay == 0.01
    assert cfg.lr_config.policy == "cyclic" and cfg.lr_config.target_ratio == 3.0
    assert cfg.lr_config.step_ratio_up == 0.4 and cfg.momentum_config.policy == "cyclic"
    assert cfg.data.samples_per_gpu == 6
    wrapper = build_optim_wrapper_cfg(cfg)
    assert wrapper["clip_grad"]["max_norm"] == 15 and "accumulative_counts" not in wrapper
    assert cfg.optimizer.paramwise_cfg.custom_keys["encoders_student.camera.backbone"] == {"lr_mult": 1.0}
    default = load_config(os.path.join(VITAEV2, "convfuser.yaml"))   # the paper-intent run keeps Swin-T's schedule
    assert default.optimizer.lr == 2e-4 and default.optimizer_config.grad_clip.max_norm == 35
    assert default.model.encoders.img_feature and default.model.encoders.prediction_distill


@pytest.mark.parametrize("config", STUDENT_CONFIGS)
def test_student_camera_backbone_is_its_own_key(config):
    cfg = load_config(config, ["--model.encoders_student.camera.backbone.type", "Other"])
    assert cfg.model.encoders_student.camera.backbone.type == "Other"
    teacher = cfg.model.encoders.camera.backbone.type
    assert teacher == ("ResNet" if "/resnet50/" in config else "SwinTransformer")
    cfg = load_config(config, ["--model.encoders.camera.backbone.type", "Other"])
    assert cfg.model.encoders_student.camera.backbone.type != "Other"


def test_pretrained_keys_reach_their_own_backbone():
    config = os.path.join(VITAEV2, "convfuser.yaml")
    cfg = load_config(config, ["--pretrained_vitaev2", "/weights/ViTAEv2-S.pth.tar"])
    assert cfg.model.encoders_student.camera.backbone.init_cfg == {"type": "Pretrained",
                                                                   "checkpoint": "/weights/ViTAEv2-S.pth.tar"}
    assert cfg.model.encoders.camera.backbone.init_cfg is None
    cfg = load_config(config, ["--pretrained_camera", "/weights/swint.pth"])
    assert cfg.model.encoders.camera.backbone.init_cfg == {"type": "Pretrained", "checkpoint": "/weights/swint.pth"}
    assert cfg.model.encoders_student.camera.backbone.init_cfg is None


def test_swin_t_teacher_checkpoint_loads_strictly_under_a_vitaev2_student(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = MODELS.build(load_config(SWIN_TEACHER, THIN_SWIN).model.to_dict())
    teacher_state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in teacher.state_dict().items()}
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": teacher_state}, path)
    vitae = tmp_path / "vitaev2.pth"
    vitae_state = {k: torch.randn_like(v) if v.is_floating_point() else v
                   for k, v in MODELS.build(dict(type="ViTAEv2")).state_dict().items()}
    torch.save({"state_dict_ema": vitae_state}, vitae)
    logged = []
    monkeypatch.setattr(simdistill, "print_log", lambda msg, **kwargs: logged.append(msg))
    cfg = load_config(os.path.join(VITAEV2, "convfuser.yaml"),
                      THIN_SWIN + ["--model.teacher_checkpoint", str(path), "--pretrained_vitaev2", str(vitae)])
    model = MODELS.build(cfg.model.to_dict())
    state = model.state_dict()
    for key, value in teacher_state.items():   # every teacher tensor, the Swin-T camera backbone included
        assert torch.equal(state[key], value), key
    assert type(model.encoders.camera.backbone).__name__ == "SwinTransformer"
    assert type(model.encoders_student.camera.backbone).__name__ == "ViTAEv2"
    for key, value in model.encoders_student.camera.backbone.state_dict().items():   # the student keeps ViTAE's
        assert torch.equal(value, vitae_state[key]) or key.startswith("norm"), key
    assert len(logged) == 2 and all("keeps its own initialisation" in m and "\n" not in m for m in logged)

    truncated = dict(teacher_state)
    del truncated["encoders.camera.backbone.stages.2.blocks.5.attn.w_msa.qkv.weight"]
    torch.save({"state_dict": truncated}, path)
    with pytest.raises(ValueError, match="1 missing"):
        MODELS.build(cfg.model.to_dict())
