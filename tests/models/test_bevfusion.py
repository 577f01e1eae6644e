"""The one BEVFusion class as fusion, LiDAR-only and camera-only detector: losses, gradients, predictions, freezing."""
import pytest
import torch

from mmdet3d.registry import MODELS

from helpers.fake_batch import make_batch, tiny_config


@pytest.mark.parametrize("name", ["teacher.yaml", "lidar.yaml", "camera_lss.yaml"])
def test_loss_backward_and_predict(name):
    torch.manual_seed(0)
    model = MODELS.build(tiny_config(name).model)
    batch = make_batch()
    model.train()
    losses = model(mode="loss", **batch)
    assert {k.split("/")[2] for k in losses} == {"heatmap", "bbox"}
    assert len(losses) == 12 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("heads.object") for n in trained)
    if "camera" in model.encoders:
        assert any(n.startswith("encoders.camera.backbone") for n in trained)
    if "lidar" in model.encoders:
        assert any(n.startswith("encoders.lidar.backbone") for n in trained)
    model.eval()
    results = model(mode="predict", **batch)
    assert [r["token"] for r in results] == ["sample0", "sample1"]
    for r in results:
        assert r["boxes_3d"].shape[1] == 9 and len(r["scores_3d"]) == len(r["labels_3d"]) == len(r["boxes_3d"])


def test_fused_bev_shapes():
    model = MODELS.build(tiny_config("teacher.yaml").model).eval()
    with torch.no_grad():
        bev = model.extract_bev(make_batch(batch_size=1))
    # 24 m at 0.3 m voxels, sparse encoder x4 -> 20 cells; camera BEV at 0.6 m, downsampled x2 -> the same grid.
    assert bev["camera"].shape == (1, 32, 20, 20)
    assert bev["lidar"].shape == (1, 128, 20, 20)
    assert bev["fused"].shape == (1, 64, 20, 20)


def test_frozen_modules_get_no_gradient_and_stay_in_eval():
    cfg = tiny_config("teacher.yaml").model
    cfg["freeze"] = ["encoders.lidar"]
    model = MODELS.build(cfg).train()
    lidar = model.encoders["lidar"]
    assert not any(p.requires_grad for p in lidar.parameters())
    assert all(p.requires_grad for p in model.encoders["camera"].parameters())
    assert not any(m.training for m in lidar.modules()) and model.encoders["camera"].training
    before = {k: v.clone() for k, v in lidar.state_dict().items()}
    sum(model(mode="loss", **make_batch()).values()).backward()
    assert all(p.grad is None for p in lidar.parameters())
    for k, v in lidar.state_dict().items():  # BN running statistics untouched too
        assert torch.equal(v, before[k]), k


def test_lidar_model_needs_points():
    model = MODELS.build(tiny_config("lidar.yaml").model)
    with pytest.raises(ValueError, match="points"):
        model(mode="loss", **make_batch(with_points=False))


def test_config_errors():
    cfg = tiny_config("teacher.yaml").model
    with pytest.raises(ValueError, match="fuser"):
        MODELS.build(dict(cfg, fuser=None))
    with pytest.raises(ValueError, match="at least one"):
        MODELS.build(dict(cfg, encoders={}))


@pytest.mark.parametrize("encoders,expected", [
    ({"lidar": {}}, True),
    ({"camera": {"vtransform": {"type": "LSSTransform"}}}, False),
    ({"camera": {"vtransform": {"type": "DepthLSSTransform"}}}, True),
    ({"camera": {"vtransform": {"type": "OracleDepthLSSTransform"}}}, True),
    ({"camera": {"vtransform": {"type": "LSSTransform"}}, "lidar": {}}, True),
])
def test_reads_points_follows_the_view_transform(encoders, expected):
    assert MODELS.get("BEVFusion").reads_points({"encoders": encoders}, training=True) is expected
