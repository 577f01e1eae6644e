"""The BEVFormer SimDistill student (VARIANTS.md B.5) on the small configs: how it is built, a training step, inference
without points, and the temporal input (previous key frame, per-sample validity, ego alignment)."""
import pytest
import torch

from mmdet3d.deploy.export import exported_camera_encoder
from mmdet3d.models.fusion_models.temporal import PREV_KEYS
from mmdet3d.registry import MODELS

from helpers.fake_batch import make_batch, tiny_config

def build(name="simdistill_bevformer.yaml", *overrides):
    torch.manual_seed(0)
    return MODELS.build(tiny_config(name, *overrides).model)


def calls_of(module):
    seen = []
    module.register_forward_hook(lambda m, args, kwargs, out: seen.append((args, kwargs, out)), with_kwargs=True)
    return seen


@pytest.mark.parametrize("name", ["simdistill_bevformer.yaml", "baseline_bevformer.yaml"])
def test_student_is_built_from_the_small_configs(name):
    model = build(name)
    camera = model.encoders_student.camera
    assert type(camera.backbone).__name__ == "ResNet" and type(camera.neck).__name__ == "FPN"
    assert type(camera.vtransform).__name__ == "BEVFormerEncoder"
    assert type(camera.vtransform2).__name__ == "LSSTransform"
    assert type(camera.backbone.layer4[0].conv2).__name__ == "ModulatedDeformConv2d"
    assert type(model.encoders.camera.backbone.layer4[0].conv2).__name__ == "Conv2d"   # the teacher keeps its own
    # the tiny grid: +-12 m at 1.2 m -> 20 x 20 cells, as the teacher's LSS
    assert (camera.vtransform.bev_h, camera.vtransform.bev_w) == (20, 20)
    assert camera.vtransform.bev_pc_range == (-12.0, -12.0, -5.0, 12.0, 12.0, 3.0)
    assert hasattr(model, "deformAttn") == (name == "simdistill_bevformer.yaml")
    assert not model.temporal


def test_branches_get_all_levels_and_the_teachers_level():
    model = build().eval()
    camera = model.encoders_student.camera
    bevformer, lss = calls_of(camera.vtransform), calls_of(camera.vtransform2)
    with torch.no_grad():
        sim_lidar, cam = model.student_bev(make_batch(with_points=False))
    levels = bevformer[0][0][0]
    assert [tuple(f.shape) for f in levels] == [(2, 6, 64, 4, 11), (2, 6, 64, 2, 6), (2, 6, 64, 1, 3),
                                                (2, 6, 64, 1, 2)]
    assert torch.equal(lss[0][0][0], levels[0])          # P3, the teacher's feature stride (image / 8)
    assert lss[0][0][1] is None                           # no LiDAR depth for the student
    assert sim_lidar.shape == cam.shape == (2, 32, 20, 20)


def test_training_step_losses_finite_and_gradients_reach_the_encoder():
    model = build().train()
    losses = model(mode="loss", **make_batch())
    groups = {"/".join(k.split("/")[:3]) for k in losses}
    assert groups == {"loss/object/heatmap", "loss/object/bbox", "loss/distill/img_feature",
                      "loss/distill/fusion_feature", "loss/distill/plidar_feature", "loss/distill/kd_cls",
                      "loss/distill/kd_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    prefix = "encoders_student.camera."
    for name in ["vtransform.bev_embedding.weight", "vtransform.level_embeds", "vtransform.cams_embeds",
                 "vtransform.layers.0.attentions.0.value_proj.weight",
                 "vtransform.layers.0.attentions.1.deformable_attention.value_proj.weight",
                 "vtransform.layers.0.attentions.1.deformable_attention.sampling_offsets.weight",
                 "vtransform.layers.0.ffns.0.layers.1.weight", "vtransform.bev_proj.0.weight",
                 "neck.fpn_convs.3.conv.weight", "backbone.layer4.0.conv2.conv_offset.weight",
                 "vtransform2.depthnet.weight"]:
        grad = params[prefix + name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert all(p.grad is None for n, p in params.items() if n.startswith(("encoders.", "fuser.")))


def test_baseline_has_only_the_detection_loss():
    losses = build("baseline_bevformer.yaml")(mode="loss", **make_batch())
    assert losses and all(k.startswith("loss/object/") for k in losses)


def test_inference_needs_no_points_and_no_teacher():
    model = build().eval()
    teacher = calls_of(model.encoders.camera.backbone) + calls_of(model.encoders.lidar.backbone)
    with torch.no_grad():
        results = model(mode="predict", **make_batch(with_points=False))
    assert len(results) == 2 and results[0]["boxes_3d"].shape[1] == 9 and results[0]["token"] == "sample0"
    assert not teacher


def test_onnx_export_refuses_the_bevformer_student_in_one_line():
    with pytest.raises(ValueError, match=r"^model\.encoders_student\.camera\.vtransform: the BEVFormer student"):
        exported_camera_encoder(build())


def test_configuration_errors_are_one_line_and_name_the_key():
    with pytest.raises(ValueError, match=r"vtransform\.type must be one of \['BEVFormerEncoder'\]"):
        build("simdistill_bevformer.yaml", "--bevformer_encoder.type", "LSSTransform")
    with pytest.raises(ValueError, match=r"BEVFormerEncoder \(out_channels, bev_w, bev_h"):
        build("simdistill_bevformer.yaml", "--bevformer_encoder.bev_w", "16")
    with pytest.raises(ValueError, match="model.temporal: only the BEVFormer student"):
        MODELS.build(dict(tiny_config("simdistill.yaml").model, temporal=True))
    with pytest.raises(ValueError, match="shared_vtransform"):
        build("simdistill_bevformer.yaml", "--model.official", "{shared_vtransform: true}")


# ------------------------------------------------------------------------------------------------ temporal
def temporal_batch(batch, with_prev):
    """``batch`` plus the previous frame's inputs: other images, the same rig, and the car 1.2 m (one cell) behind
    along the LiDAR's x axis (the nuScenes LiDAR is turned against the ego frame: the motion is built in it)."""
    out = dict(batch)
    b = batch["img"].shape[0]
    out["prev_img"] = batch["img"].flip(-1)
    for key in ("lidar2image", "img_aug_matrix", "lidar_aug_matrix"):
        out[f"prev_{key}"] = batch[key].clone()
    back = torch.eye(4).repeat(b, 1, 1)
    back[:, 0, 3] = -1.2
    lidar2ego = batch["lidar2ego"]
    out["ego2global"] = torch.eye(4).repeat(b, 1, 1)
    out["prev_ego2global"] = lidar2ego @ back @ torch.inverse(lidar2ego)
    out["prev_exists"] = torch.tensor(with_prev)
    return out


def pair():
    """The same weights as a plain and as a temporal student, in eval mode (no dropout)."""
    plain = build().eval()
    temporal = build("simdistill_bevformer.yaml", "--model.temporal", "true").eval()
    temporal.load_state_dict(plain.state_dict())
    return plain, temporal


def test_without_any_previous_frame_the_temporal_student_equals_the_plain_one():
    plain, temporal = pair()
    batch = make_batch(with_points=False)
    with torch.no_grad():
        want = plain.student_bev(batch)
        got = temporal.student_bev(temporal_batch(batch, [False, False]))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_previous_frame_is_used_per_sample_and_aligned_by_ego_motion():
    plain, temporal = pair()
    batch = make_batch(with_points=False)
    encoder = temporal.encoders_student.camera.vtransform
    tsa_inputs = calls_of(encoder.layers[0].attentions[0])
    with torch.no_grad():
        want = plain.student_bev(batch)[0]
        got = temporal.student_bev(temporal_batch(batch, [True, False]))[0]
        # the previous BEV, computed directly: the encoder on the previous images, without history
        prev_levels = temporal.student_features(batch["img"].flip(-1))
        _, prev_embed = encoder(prev_levels, batch["lidar2image"], batch["img_aug_matrix"], batch["lidar_aug_matrix"])
    torch.testing.assert_close(got[1], want[1])           # no previous frame: as without the temporal input
    assert not torch.allclose(got[0], want[0], atol=1e-3)
    assert tsa_inputs[0][0][4] is None                    # the previous frame's own pass has no history
    args = tsa_inputs[1][0]
    prev_queries, valid = args[4], args[5]
    assert valid.tolist() == [True, False]
    # the car moved +1.2 m (one cell) along x: current cell i reads the previous BEV at cell i + 1
    aligned = prev_queries.view(2, 20, 20, -1).permute(0, 3, 2, 1)   # queries (row = y) -> [B, C, X, Y]
    torch.testing.assert_close(aligned[:, :, :-1], prev_embed[:, :, 1:])
    assert torch.all(aligned[:, :, -1] == 0)


def test_previous_frame_runs_without_gradients_and_keeps_the_training_mode():
    _, temporal = pair()
    temporal.train()
    batch = temporal_batch(make_batch(), [True, True])
    backbone = temporal.encoders_student.camera.backbone
    modes = []
    backbone.register_forward_pre_hook(lambda m, args: modes.append((m.training, torch.is_grad_enabled())))
    losses = temporal(mode="loss", **batch)
    sum(losses.values()).backward()
    assert sorted(modes) == [(False, False), (True, True)]   # the current frame; the previous one in eval, no_grad
    assert temporal.encoders_student.camera.training


def test_temporal_inputs_are_checked():
    _, temporal = pair()
    batch = temporal_batch(make_batch(with_points=False), [True, True])
    incomplete = {k: v for k, v in batch.items() if k not in ("prev_img", "prev_ego2global")}
    with pytest.raises(ValueError, match=r"model.temporal needs \['prev_img', 'prev_ego2global'\]"):
        temporal.student_bev(incomplete)
    with pytest.raises(ValueError, match=r"prev_exists'\] must be a \[2\] bool tensor"):
        temporal.student_bev(dict(batch, prev_exists=torch.ones(2)))
    assert set(PREV_KEYS) <= set(batch)


def test_dataset_keys_follow_the_switch():
    on = tiny_config("simdistill_bevformer.yaml", "--model.temporal", "true")
    off = tiny_config("simdistill_bevformer.yaml")
    assert [on.data[s].with_prev_frame for s in ("train", "val", "test")] == [True] * 3
    assert [off.data[s].with_prev_frame for s in ("train", "val", "test")] == [False] * 3
    assert on.model.temporal is True


def test_small_dcn_backbone_starts_from_the_plain_pretrained_resnet18(tmp_path):
    torch.manual_seed(1)
    plain = MODELS.build(dict(type="ResNet", depth=18, out_indices=[1, 2, 3])).state_dict()
    plain = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in plain.items()}
    path = tmp_path / "resnet18.pth"
    torch.save(plain, path)
    model = build("simdistill_bevformer.yaml", "--pretrained_camera", str(path))
    student = model.encoders_student.camera.backbone.state_dict()
    for key, value in plain.items():   # the DCN's main weight included; its offsets start at zero
        assert torch.equal(student[key], value), key
    assert not student["layer4.0.conv2.conv_offset.weight"].any()
    assert torch.equal(model.encoders.camera.backbone.state_dict()["layer4.0.conv2.weight"],
                       plain["layer4.0.conv2.weight"])
