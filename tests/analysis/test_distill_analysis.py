"""Per-loss gradient norms follow SimDistill's data flow; the grid-alignment check finds a known transpose/flip."""
import os

import pytest
import torch

from helpers.fake_batch import make_batch, tiny_config
from mmdet3d.analysis import distill_analysis
from mmdet3d.registry import MODELS

CAMERA = ["encoders_student.camera.backbone", "encoders_student.camera.neck"]
SIM_LIDAR = ["encoders_student.camera.vtransform", "deformAttn"]
CAMERA_BRANCH = ["encoders_student.camera.vtransform2"]
TOP = ["decoder_student", "heads_student"]

# Which student modules each loss reaches (paper Fig. 2): the rest must get exactly zero gradient.
REACHES = {
    "img_feature": CAMERA + CAMERA_BRANCH,
    "plidar_feature": CAMERA + SIM_LIDAR + ["trans_student"],
    "fusion_feature": CAMERA + SIM_LIDAR + CAMERA_BRANCH + ["fuser_student"],
    "kd_cls": CAMERA + SIM_LIDAR + CAMERA_BRANCH + ["fuser_student"] + TOP,
    "kd_box": CAMERA + SIM_LIDAR + CAMERA_BRANCH + ["fuser_student"] + TOP,
    "object": CAMERA + SIM_LIDAR + CAMERA_BRANCH + ["fuser_student"] + TOP,
}


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = MODELS.build(tiny_config("simdistill.yaml").model).train()
    return model, distill_analysis.loss_gradient_norms(model, make_batch())


def test_each_loss_reaches_exactly_its_modules(report):
    _, rep = report
    assert set(rep) == set(REACHES)
    for group, reached in REACHES.items():
        norms = rep[group]["grad_norm"]
        assert set(norms) == set(distill_analysis.STUDENT_MODULES)
        for module, norm in norms.items():
            if module in reached:
                assert norm > 0, f"{group} does not reach {module}"
            else:
                assert norm == 0, f"{group} reaches {module} ({norm})"


def test_gradient_norm_equals_backward_of_that_loss_alone(report):
    model, rep = report
    model.zero_grad()
    torch.manual_seed(0)
    losses = model(mode="loss", **make_batch())
    sum(v for k, v in losses.items() if k.startswith("loss/distill/kd_box/")).backward()
    expected = torch.stack([p.grad.pow(2).sum() for p in model.heads_student.parameters() if p.grad is not None])
    assert rep["kd_box"]["grad_norm"]["heads_student"] == pytest.approx(float(expected.sum().sqrt()), rel=1e-4)
    value = sum(float(v.detach()) for k, v in losses.items() if k.startswith("loss/distill/kd_box/"))
    assert rep["kd_box"]["value"] == pytest.approx(value, rel=1e-5)


def test_loss_gradient_norms_leaves_gradients_alone():
    torch.manual_seed(0)
    model = MODELS.build(tiny_config("baseline.yaml").model).train()
    distill_analysis.loss_gradient_norms(model, make_batch())
    assert all(p.grad is None for p in model.parameters())


def test_loss_group_names():
    assert distill_analysis.loss_group("loss/object/heatmap/task0") == "object"
    assert distill_analysis.loss_group("loss/distill/kd_box/task3") == "kd_box"
    assert distill_analysis.loss_group("loss/distill/img_feature") == "img_feature"
    with pytest.raises(ValueError, match="heatmap"):
        distill_analysis.loss_group("heatmap")


def test_alignment_finds_transpose_and_flip():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, 12, 12)
    mask[0, 0, 2, 9] = mask[0, 0, 7, 3] = 1.0
    mask[1, 0, 10, 1] = mask[1, 0, 4, 5] = 1.0
    features = mask.repeat(1, 3, 1, 1) * (1 + torch.rand(2, 3, 12, 12, generator=g))
    maps = {"aligned": features, "transposed": features.transpose(-1, -2), "flipped": features.flip(-2)}
    result = distill_analysis.bev_alignment(maps, mask)
    assert distill_analysis.best_symmetry(result["aligned"]) == "identity"
    assert distill_analysis.best_symmetry(result["transposed"]) == "transpose"
    assert distill_analysis.best_symmetry(result["flipped"]) == "flip_x"
    weaker_at_objects = distill_analysis.bev_alignment({"m": 2 - features.flip(-1)}, mask)["m"]
    assert weaker_at_objects["flip_y"] < 0 and distill_analysis.best_symmetry(weaker_at_objects) == "flip_y"
    exact = distill_analysis.bev_alignment({"m": mask.repeat(1, 2, 1, 1)}, mask)["m"]
    assert exact["identity"] == pytest.approx((12 * 12 - 1) / (12 * 12), rel=1e-5)


def test_alignment_rejects_a_grid_of_another_size():
    with pytest.raises(ValueError, match="'lidar'"):
        distill_analysis.bev_alignment({"lidar": torch.zeros(1, 4, 10, 10)}, torch.zeros(1, 1, 12, 12))


def test_student_detection_loss_is_the_eval_mode_gt_loss():
    torch.manual_seed(0)
    model = MODELS.build(tiny_config("baseline.yaml").model).train()
    batch = make_batch()
    got = distill_analysis.student_detection_loss(model, batch)
    assert model.training and model.heads_student.training and not model.heads.training

    def summed(mode):
        model.train(mode)
        with torch.no_grad():
            losses = model.heads_student["object"].loss(batch["gt_bboxes_3d"], batch["gt_labels_3d"],
                                                        model.head_outputs(batch))
        return {kind: float(sum(v for k, v in losses.items() if k.startswith(kind))) for kind in ("heatmap", "bbox")}

    expected = summed(False)
    assert got == pytest.approx(expected, rel=1e-6)
    assert summed(True)["heatmap"] != pytest.approx(expected["heatmap"], rel=1e-3)  # batch statistics differ


def test_balanced_weights_by_hand():
    from mmdet3d.analysis.distill_analysis import balanced_weights

    module = "encoders_student.camera.backbone"
    report = {"object": {"value": 10.0, "grad_norm": {module: 2.0, "heads_student": 5.0}},
              "img_feature": {"value": 0.1, "grad_norm": {module: 0.02, "heads_student": 0.0}},
              "kd_box": {"value": 0.3, "grad_norm": {module: 0.0, "heads_student": 1.0}}}
    out = balanced_weights(report, {"img_feature": 1.0, "kd_box": 0.25}, 1 / 3, module)
    assert list(out) == ["img_feature", "kd_box"]
    # 0.02 / 2.0 = 1 % of the detection gradient at weight 1: weight 1/3 / 0.01 = 33.3 gives a third.
    assert out["img_feature"]["ratio"] == pytest.approx(0.01)
    assert out["img_feature"]["balanced"] == pytest.approx(100 / 3)
    assert out["kd_box"]["ratio"] == 0 and out["kd_box"]["balanced"] is None
    with pytest.raises(ValueError, match="no gradient on 'neck'"):
        balanced_weights(report, {"img_feature": 1.0, "kd_box": 0.25}, 1 / 3, "neck")
    with pytest.raises(ValueError, match="'kd_box' has no weight"):
        balanced_weights(report, {"img_feature": 1.0}, 1 / 3, module)
