"""SimDistill: a frozen teacher, the student's two branches, each distillation switch and the official switches."""
import pytest
import torch

from mmdet3d.models.fusion_models.simdistill import OfficialSwitches
from mmdet3d.registry import MODELS

from helpers.fake_batch import make_batch, tiny_config

FLAGS = ["fusion_feature", "plidar_feature", "plidar_mask", "img_feature", "prediction_distill", "bev_DeformAttn"]


def build(*overrides):
    torch.manual_seed(0)
    return MODELS.build(tiny_config("simdistill.yaml", *overrides).model)


def teacher_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in ("encoders", "fuser",
                                                                                       "decoder", "heads")}


def test_teacher_is_untouched_by_a_training_step():
    model = build().train()
    assert all(not m.training for name in ("encoders", "fuser", "decoder", "heads")
               for m in getattr(model, name).modules())
    assert model.encoders_student.training and model.heads_student.training
    before = teacher_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = model(mode="loss", **make_batch())
    sum(losses.values()).backward()
    opt.step()
    after = teacher_state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"teacher tensor {k} changed"
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.split(".")[0] in ("encoders", "fuser"))


def test_all_losses_present_and_finite():
    losses = build()(mode="loss", **make_batch())
    groups = {"/".join(k.split("/")[:3]) for k in losses}
    assert groups == {"loss/object/heatmap", "loss/object/bbox", "loss/distill/img_feature",
                      "loss/distill/fusion_feature", "loss/distill/plidar_feature", "loss/distill/kd_cls",
                      "loss/distill/kd_box"}
    assert all(torch.isfinite(v) for v in losses.values())


def has_module(model, name):
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def count_calls(model, names):
    calls = {n: 0 for n in names}
    for n in names:
        model.get_submodule(n).register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1))
    return calls


@pytest.mark.parametrize("flag,loss_group,removed_compute", [
    ("img_feature", "loss/distill/img_feature", []),
    ("fusion_feature", "loss/distill/fusion_feature", []),
    ("plidar_feature", "loss/distill/plidar_feature", ["trans_student"]),
    ("prediction_distill", "loss/distill/kd_", ["heads.object", "decoder.backbone"]),
    ("bev_DeformAttn", None, ["deformAttn"]),
])
def test_switching_a_flag_off_removes_its_loss_and_compute(flag, loss_group, removed_compute):
    on, off = build(), build(f"--model.encoders.{flag}", "false")
    watched = ["trans_student", "heads.object", "decoder.backbone", "deformAttn", "encoders.lidar.backbone",
               "encoders.camera.backbone"]
    calls_on = count_calls(on, watched)
    calls_off = count_calls(off, [n for n in watched if has_module(off, n)])
    losses_on, losses_off = on(mode="loss", **make_batch()), off(mode="loss", **make_batch())
    removed = set(losses_on) - set(losses_off)
    assert set(losses_off) <= set(losses_on)
    if loss_group:
        assert removed and all(k.startswith(loss_group) for k in removed)
    else:
        assert not removed
    for name in removed_compute:
        assert calls_on[name] >= 1
        assert calls_off.get(name, 0) == 0, f"{name} still runs with {flag} off"
        if name in ("trans_student", "deformAttn"):
            assert not hasattr(off, name)


def test_no_teacher_compute_without_distillation():
    off = build(*[x for f in FLAGS for x in (f"--model.encoders.{f}", "false")])
    calls = count_calls(off, ["encoders.camera.backbone", "encoders.lidar.backbone", "fuser", "heads.object"])
    losses = off(mode="loss", **make_batch())
    assert all(k.startswith("loss/object/") for k in losses)
    assert all(v == 0 for v in calls.values()), calls


def test_inference_runs_the_student_on_images_only():
    model = build().eval()
    calls = count_calls(model, ["encoders.camera.backbone", "encoders.lidar.backbone", "heads.object",
                                "heads_student.object"])
    with torch.no_grad():
        results = model(mode="predict", **make_batch(with_points=False))
    assert len(results) == 2 and results[0]["boxes_3d"].shape[1] == 9
    assert calls["heads_student.object"] == 1
    assert calls["encoders.camera.backbone"] == calls["encoders.lidar.backbone"] == calls["heads.object"] == 0


def test_state_dict_follows_the_original_naming():
    keys = build().state_dict().keys()
    for prefix in ["encoders.camera.backbone.", "encoders.lidar.backbone.", "fuser.", "decoder.backbone.",
                   "heads.object.", "encoders_student.camera.backbone.", "encoders_student.camera.neck.",
                   "encoders_student.camera.vtransform.", "encoders_student.camera.vtransform2.", "deformAttn.",
                   "fuser_student.", "trans_student.", "decoder_student.backbone.", "decoder_student.neck.",
                   "heads_student.object."]:
        assert any(k.startswith(prefix) for k in keys), prefix


def test_student_is_camera_only_by_default_and_official_feeds_depth():
    paper = build()
    assert type(paper.encoders_student.camera.vtransform).__name__ == "LSSTransform"
    assert type(paper.encoders.camera.vtransform).__name__ == "DepthLSSTransform"
    official = build("--model.official", "true")
    assert type(official.encoders_student.camera.vtransform).__name__ == "DepthLSSTransform"
    assert "vtransform2" not in official.encoders_student.camera  # one module called twice (F2)
    assert official.deformAttn.corner_reference
    # The official teacher fuser trains (F5); the paper's is frozen.
    assert all(p.requires_grad for p in official.fuser.parameters())
    assert not any(p.requires_grad for p in paper.fuser.parameters())


def test_official_switches_parse():
    assert OfficialSwitches.from_config(None) == OfficialSwitches()
    assert all(vars(OfficialSwitches.from_config(True)).values())
    assert OfficialSwitches.from_config({"kd_losses": True}).kd_losses
    with pytest.raises(ValueError, match="unknown switches"):
        OfficialSwitches.from_config({"nope": True})


def test_teacher_checkpoint_initialises_the_student_camera_encoder(tmp_path):
    teacher = MODELS.build(tiny_config("teacher.yaml").model)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": teacher.state_dict()}, path)
    model = build("--model.teacher_checkpoint", str(path))
    for part in ("backbone", "neck"):
        for (k, v), (_, t) in zip(model.encoders_student.camera[part].state_dict().items(),
                                  teacher.encoders.camera[part].state_dict().items()):
            assert torch.equal(v, t), k
    for k, v in teacher.heads.state_dict().items():
        assert torch.equal(model.heads.state_dict()[k], v)


def test_baseline_and_ablations_start_from_the_same_student_weights():
    """With one seed, every student module the baseline has gets the same initial weights as in SimDistill, so a
    comparison of the two trains the same network under different losses."""
    full = build().state_dict()
    baseline = build(*[x for f in FLAGS for x in (f"--model.encoders.{f}", "false")]).state_dict()
    assert set(baseline) < set(full)
    for key, value in baseline.items():
        assert torch.equal(value, full[key]), f"{key} starts differently in the baseline"


def test_teacher_checkpoint_must_fill_the_whole_teacher(tmp_path):
    teacher = MODELS.build(tiny_config("teacher.yaml").model).state_dict()
    dropped = "heads.object.shared_conv.conv.weight"
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": {k: v for k, v in teacher.items() if k != dropped}}, path)
    with pytest.raises(ValueError, match=r"heads\.\*.*1 missing \(object\.shared_conv\.conv\.weight\)"):
        build("--model.teacher_checkpoint", str(path))
    reshaped = dict(teacher, **{"fuser.0.weight": teacher["fuser.0.weight"][:, :-1]})
    torch.save({"state_dict": reshaped}, path)
    with pytest.raises(ValueError, match=r"fuser\.\*.*another shape"):
        build("--model.teacher_checkpoint", str(path))


def test_a_simdistill_checkpoint_can_serve_as_teacher(tmp_path):
    source = build()
    with torch.no_grad():
        for p in source.fuser.parameters():
            p.add_(1.0)
    path = tmp_path / "simdistill.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = build("--model.teacher_checkpoint", str(path))
    for k, v in source.fuser.state_dict().items():
        assert torch.equal(model.fuser.state_dict()[k], v)


@pytest.mark.parametrize("name", ["simdistill_vitaev2.yaml", "baseline_vitaev2.yaml"])
def test_small_vitaev2_student_trains_beside_a_resnet_teacher(name):
    torch.manual_seed(0)
    model = MODELS.build(tiny_config(name).model).train()
    student = model.encoders_student["camera"]["backbone"]
    assert type(student).__name__ == "ViTAEv2" and type(model.encoders["camera"]["backbone"]).__name__ == "ResNet"
    before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = model(mode="loss", **make_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
