"""``pretrained_camera``: one config key names the pretrained camera backbone of every paper-size model (teacher and
students), as the paper trains them (the nuImages Swin-T of BEVFusion, mmdet layout)."""
import glob
import os

import pytest
import torch
import torchvision

from mmdet3d.models.fusion_models.simdistill import student_camera_config
from mmdet3d.registry import MODELS
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUSCENES = os.path.join(REPO, "configs", "nuscenes")
LSSFPN = os.path.join(NUSCENES, "det", "centerhead", "lssfpn")
TEACHER = os.path.join(LSSFPN, "camera+lidar", "swint", "convfuser.yaml")
STUDENT = os.path.join(LSSFPN, "camera", "256x704", "swint", "convfuser.yaml")
# Paper-size models with a thin Swin (embed 24: the default heads still divide it), quick to build on a CPU.
THIN_SWIN = ["--swint_backbone.embed_dims", "24", "--camera_neck.in_channels", "[48, 96, 192]"]
WEIGHTS = "/pretrained/swint-nuimages-pretrained.pth"


def paper_configs():
    files = glob.glob(os.path.join(NUSCENES, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(f, REPO) for f in files if os.path.basename(f) != "default.yaml")


def camera_backbones(cfg):
    """Every camera backbone config the model builds: the teacher's and, for SimDistill, the student's."""
    model = cfg.model
    out = {"encoders": model.encoders.camera.backbone}
    if model.type == "SimDistill":
        student = model.get("encoders_student", {}).get("camera")
        out["encoders_student"] = student_camera_config(model.encoders.camera, False, student)["backbone"]
    return out


def test_paper_configs_are_all_listed():
    configs = paper_configs()
    assert len(configs) >= 9 and sum("lidar/voxelnet.yaml" in c for c in configs) == 1
    assert sum("/swint/" in c for c in configs) >= 4 and sum("/resnet50/" in c for c in configs) >= 4


@pytest.mark.parametrize("config", paper_configs())
def test_pretrained_camera_reaches_every_camera_backbone(config):
    default = load_config(os.path.join(REPO, config))
    if "camera" not in default.model.encoders:   # the LiDAR-only model has no camera backbone
        assert default.pretrained_camera is None
        return
    for name, backbone in camera_backbones(default).items():
        assert backbone.get("init_cfg") is None and backbone.get("pretrained") is None, name
    cfg = load_config(os.path.join(REPO, config), ["--pretrained_camera", WEIGHTS])
    backbones = camera_backbones(cfg)
    assert set(backbones) == ({"encoders", "encoders_student"} if cfg.model.type == "SimDistill" else {"encoders"})
    for name, backbone in backbones.items():
        if backbone["type"] == "ViTAEv2":   # its own key, pretrained_vitaev2 (tests/utils/test_vitaev2_configs.py)
            assert "/vitaev2/" in config and name == "encoders_student" and backbone["init_cfg"] is None
            continue
        if "/bevformer/" in config and name == "encoders_student":   # its own key, pretrained_r101_dcn
            assert backbone["type"] == "ResNet" and backbone["init_cfg"] is None   # (test_bevformer_configs.py)
            continue
        assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": WEIGHTS}, (config, name)
        assert backbone.get("pretrained") is None, (config, name)   # giving both is an error
        assert backbone["type"] == ("ResNet" if "resnet50" in config else "SwinTransformer")


def mmdet_swin_checkpoint(path, layout, seed=0):
    """A Swin-T of THIN_SWIN's width as mmdet saves a detector pretrained on nuImages (keys ``backbone.*`` next to
    the neck and heads; mmdet's Swin also has ``norm0``), or as a bare backbone state dict."""
    cfg = load_config(TEACHER, THIN_SWIN).model.encoders.camera.backbone.to_dict()
    torch.manual_seed(seed)
    state = MODELS.build(cfg).state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    if layout == "mmdet":
        ckpt = {"meta": {"mmdet_version": "2.20.0", "CLASSES": ["car", "truck"]},
                "state_dict": {**{f"backbone.{k}": v for k, v in state.items()},
                               "backbone.norm0.weight": torch.ones(24), "backbone.norm0.bias": torch.zeros(24),
                               "neck.fpn_convs.0.conv.weight": torch.zeros(8, 8, 3, 3),
                               "rpn_head.rpn_conv.weight": torch.zeros(8, 8, 3, 3)}}
    else:
        ckpt = state
    torch.save(ckpt, path)
    return state


@pytest.mark.parametrize("layout", ["mmdet", "bare"])
def test_pretrained_camera_starts_teacher_and_student(tmp_path, layout, warnings_logged):
    path = str(tmp_path / "swint-nuimages-pretrained.pth")
    state = mmdet_swin_checkpoint(path, layout)
    for config in (TEACHER, STUDENT):
        cfg = load_config(config, THIN_SWIN + ["--pretrained_camera", path])
        model = MODELS.build(cfg.model.to_dict())
        for name in camera_backbones(cfg):   # SimDistill without a teacher checkpoint: both from the file
            backbone = getattr(model, name)["camera"]["backbone"].state_dict()
            assert backbone.keys() == state.keys(), (config, name)
            for key, value in backbone.items():
                assert torch.equal(value, state[key]), (config, name, key)
    if layout == "mmdet":   # the teacher, then SimDistill's teacher and student
        assert len(warnings_logged) == 3
        for message in warnings_logged:
            assert "\n" not in message and path in message and "2 unexpected (norm0.weight, norm0.bias)" in message
    else:
        assert warnings_logged == []
    fresh = MODELS.build(load_config(TEACHER, THIN_SWIN).model.to_dict())
    weight = "patch_embed.projection.weight"
    assert not torch.equal(fresh.encoders["camera"]["backbone"].state_dict()[weight], state[weight])


def test_not_a_swin_t_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    cfg = load_config(TEACHER, THIN_SWIN + ["--pretrained_camera", str(path)])
    with pytest.raises(ValueError) as error:
        MODELS.build(cfg.model.to_dict())
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "holds no weights of this backbone" in message
    assert message.startswith("SwinTransformer(embed_dims=24, depths=[2, 2, 6, 2]")


def test_pretrained_camera_starts_the_resnet50_backbones(tmp_path, warnings_logged):
    path = tmp_path / "resnet.pth"
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()   # torchvision layout, with the classifier
    torch.save(reference, path)
    config = os.path.join(LSSFPN, "camera", "256x704", "resnet50", "convfuser.yaml")
    cfg = load_config(config, ["--pretrained_camera", str(path), "--resnet50_backbone.depth", "18"])
    for name, backbone_cfg in camera_backbones(cfg).items():
        backbone = MODELS.build(backbone_cfg)
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, reference[key]), (name, key)
    assert len(warnings_logged) == 2 and all("2 unexpected (fc.weight, fc.bias)" in m for m in warnings_logged)
