import copy
import math

import numpy as np
import pytest
import torch
import yaml

from mmdet3d.models.heads import CenterHead, clip_sigmoid
from mmdet3d.registry import MODELS

# REFERENCE §1.3, heads.object, verbatim.
PAPER_YAML = """
type: CenterHead
in_channels: 256
tasks: [[car],[truck,construction_vehicle],[bus,trailer],[barrier],[motorcycle,bicycle],[pedestrian,traffic_cone]]
common_heads: {reg: [2,2], height: [1,2], dim: [3,2], rot: [2,2], vel: [2,2]}
share_conv_channel: 64
separate_head: {type: SeparateHead, init_bias: -2.19, final_kernel: 3}
loss_cls: {type: GaussianFocalLoss, reduction: mean}
loss_bbox: {type: L1Loss, reduction: mean, loss_weight: 0.25}
norm_bbox: true
bbox_coder: {type: CenterPointBBoxCoder, pc_range: [-54,-54,-5,54,54,3], post_center_range: [-61.2,-61.2,-10,61.2,61.2,10],
             max_num: 500, score_threshold: 0.1, out_size_factor: 8, voxel_size: [0.075,0.075], code_size: 9}
train_cfg: {point_cloud_range: [-54,-54,-5,54,54,3], grid_size: [1440,1440,1], voxel_size: [0.075,0.075,0.2],
            out_size_factor: 8, dense_reg: 1, gaussian_overlap: 0.1, max_objs: 500, min_radius: 2,
            code_weights: [1,1,1,1,1,1,1,1,0.2,0.2]}
test_cfg: {post_center_limit_range: [-61.2,-61.2,-10,61.2,61.2,10], max_per_img: 500, max_pool_nms: false,
           min_radius: [4,12,10,1,0.85,0.175], score_threshold: 0.1, out_size_factor: 8, voxel_size: [0.075,0.075],
           nms_type: [circle, rotate, rotate, circle, rotate, rotate], pre_max_size: 1000, post_max_size: 83, nms_thr: 0.2,
           nms_scale: [[1.0],[1.0,1.0],[1.0,1.0],[1.0],[1.0,1.0],[2.5,4.0]]}
"""
PAPER = yaml.safe_load(PAPER_YAML)
CAR, TRUCK, CONSTRUCTION, BUS, TRAILER, BARRIER, MOTORCYCLE, BICYCLE, PEDESTRIAN, CONE = range(10)
REG_CHANNELS = [("reg", 0, 2), ("height", 2, 3), ("dim", 3, 6), ("rot", 6, 8), ("vel", 8, 10)]


def build(cfg=None, **changes):
    cfg = copy.deepcopy(cfg or PAPER)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return MODELS.build(cfg)


def box(x, y, z=0.0, l=4.5, w=1.9, h=1.6, yaw=0.0, vx=0.0, vy=0.0):
    return [x, y, z, l, w, h, yaw, vx, vy]


def targets_of(head, boxes, labels):
    return head.get_targets([torch.tensor(boxes, dtype=torch.float32).reshape(-1, 9)],
                            [torch.tensor(labels, dtype=torch.long)])


def perfect_preds(head, boxes, labels, scores):
    """Prediction maps a perfect network would output for one sample: logit(score) at each object's cell and class,
    -10 elsewhere, and the object's box code at its cell."""
    targets = targets_of(head, boxes, labels)
    size_x, size_y = targets.heatmaps[0].shape[2:]
    preds = []
    for t, (offset, num_cls) in enumerate(zip(head.label_offsets, head.num_classes)):
        members = [k for k, label in enumerate(labels) if offset <= label < offset + num_cls]
        pred = {name: torch.zeros(1, hi - lo, size_x, size_y) for name, lo, hi in REG_CHANNELS}
        pred["heatmap"] = torch.full((1, num_cls, size_x, size_y), -10.0)
        for slot, k in enumerate(members):
            if not targets.masks[t][0, slot]:
                continue
            i, j = divmod(int(targets.inds[t][0, slot]), size_y)
            pred["heatmap"][0, labels[k] - offset, i, j] = math.log(scores[k] / (1 - scores[k]))
            for name, lo, hi in REG_CHANNELS:
                pred[name][0, :, i, j] = targets.anno_boxes[t][0, slot, lo:hi]
        preds.append(pred)
    return preds


# ------------------------------------------------------------------------------------------------ structure
def test_build_from_reference_yaml_key_names_and_init():
    head = build()
    assert isinstance(head, CenterHead) and head.num_classes == [1, 2, 2, 1, 2, 2]
    state = head.state_dict()
    for key in ["shared_conv.conv.weight", "shared_conv.bn.weight", "shared_conv.bn.running_var",
                "task_heads.0.reg.0.conv.weight", "task_heads.0.reg.0.bn.bias", "task_heads.0.reg.1.weight",
                "task_heads.0.reg.1.bias", "task_heads.5.heatmap.0.conv.weight", "task_heads.5.heatmap.1.bias"]:
        assert key in state, key
    assert "shared_conv.conv.bias" not in state and "task_heads.0.reg.0.conv.bias" not in state
    assert state["shared_conv.conv.weight"].shape == (64, 256, 3, 3)
    for t, num_cls in enumerate(head.num_classes):
        assert state[f"task_heads.{t}.heatmap.1.weight"].shape == (num_cls, 64, 3, 3)
        assert torch.all(state[f"task_heads.{t}.heatmap.1.bias"] == torch.tensor(-2.19))
        for name, lo, hi in REG_CHANNELS:
            assert state[f"task_heads.{t}.{name}.1.weight"].shape == (hi - lo, 64, 3, 3)
            assert torch.all(state[f"task_heads.{t}.{name}.1.bias"] == 0)
    # Kaiming fan_out: std sqrt(2 / (64 * 9)) for a 64-channel 3x3 conv
    std = state["task_heads.0.dim.0.conv.weight"].std().item()
    assert std == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


@pytest.mark.slow   # 2-8 s on two shared CPU cores
def test_forward_shapes_at_paper_config():
    head = build().eval()
    with torch.no_grad():
        preds = head(torch.randn(1, 256, 180, 180))
    assert len(preds) == 6
    for pred, num_cls in zip(preds, [1, 2, 2, 1, 2, 2]):
        assert sorted(pred) == ["dim", "heatmap", "height", "reg", "rot", "vel"]
        assert pred["heatmap"].shape == (1, num_cls, 180, 180)
        for name, lo, hi in REG_CHANNELS:
            assert pred[name].shape == (1, hi - lo, 180, 180)


# -------------------------------------------------------------------------------------------------- targets
def test_targets_hand_computed_bus():
    head = build()
    bus = box(10.3, -5.0, 0.5, l=11.0, w=2.9, h=3.4, yaw=0.4, vx=1.0, vy=2.0)
    targets = targets_of(head, [bus], [BUS])
    # centre cell: (10.3 + 54) / 0.6 = 107.17 -> 107, (-5 + 54) / 0.6 = 81.67 -> 81
    cx, cy = 107, 81
    # radius (cells l = 11 / 0.6, w = 2.9 / 0.6, overlap 0.1), the three cases of the released formula by hand:
    l, w, o = 11 / 0.6, 2.9 / 0.6, 0.1
    r1 = ((l + w) + math.sqrt((l + w) ** 2 - 4 * l * w * (1 - o) / (1 + o))) / 2            # 19.44
    r2 = (2 * (l + w) + math.sqrt(4 * (l + w) ** 2 - 16 * (1 - o) * l * w)) / 2              # 37.9
    r3 = (-2 * o * (l + w) + math.sqrt(4 * (o * (l + w)) ** 2 + 16 * o * (1 - o) * l * w)) / 2  # 3.79
    assert int(min(r1, r2, r3)) == 3
    radius, sigma = 3, 7 / 6

    heat = targets.heatmaps[2][0]
    assert heat.shape == (2, 180, 180)
    assert heat[0, cx, cy] == 1.0 and heat[0].eq(1).sum() == 1
    assert heat[0, cx + 1, cy].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[0, cx - radius, cy].item() == pytest.approx(math.exp(-9 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[0, cx + radius, cy + radius].item() == pytest.approx(math.exp(-18 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[0, cx - radius - 1, cy] == 0 and heat[0, cx, cy + radius + 1] == 0
    assert heat[0].gt(0).sum() == (2 * radius + 1) ** 2
    assert heat[1].sum() == 0   # trailer channel
    assert all(targets.heatmaps[t].sum() == 0 for t in (0, 1, 3, 4, 5))

    assert targets.inds[2][0, 0] == cx * 180 + cy
    assert targets.masks[2][0].tolist() == [True] + [False] * 499
    expected = [64.3 / 0.6 - cx, 49 / 0.6 - cy, 0.5, math.log(11), math.log(2.9), math.log(3.4),
                math.sin(0.4), math.cos(0.4), 1.0, 2.0]
    np.testing.assert_allclose(targets.anno_boxes[2][0, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert targets.anno_boxes[2].shape == (1, 500, 10) and targets.inds[2].dtype == torch.int64


def test_small_objects_get_min_radius():
    head = build()
    targets = targets_of(head, [box(0.1, 0.1, l=0.6, w=0.6, h=1.7)], [PEDESTRIAN])
    heat = targets.heatmaps[5][0, 0]
    assert heat[90, 90] == 1.0
    assert heat[92, 90].item() == pytest.approx(math.exp(-4 / (2 * (5 / 6) ** 2)), rel=1e-6)
    assert heat[93, 90] == 0 and heat.gt(0).sum() == 25


@pytest.mark.parametrize("x, y", [(20.0, 0.1), (0.1, 20.0), (-20.0, 0.1), (0.1, -20.0)])
def test_bev_axis_convention(x, y):
    targets = targets_of(build(), [box(x, y)], [CAR])
    row, col = divmod(int(targets.heatmaps[0][0, 0].argmax()), 180)
    centre = 90   # x = 0.1 m lies in cell 90
    assert (row > centre) == (x > 10) and (row < centre) == (x < -10) and (row == centre) == (abs(x) < 1)
    assert (col > centre) == (y > 10) and (col < centre) == (y < -10) and (col == centre) == (abs(y) < 1)
    assert targets.inds[0][0, 0] == row * 180 + col


def test_skipped_objects_keep_their_slots():
    head = build()
    boxes = [box(60.0, 0.0), box(5.0, 5.0), box(1.0, 1.0, l=0.0), box(3.0, 3.0), box(-54.3, 0.1)]
    labels = [CAR, CAR, CAR, -1, CAR]
    targets = targets_of(head, boxes, labels)
    # slot = index among the sample's cars: out of range (0) and zero length (2) are skipped, label -1 is no car
    assert targets.masks[0][0, :5].tolist() == [False, True, False, True, False]
    assert targets.heatmaps[0].eq(1).sum() == 2
    # x = -54.3 m is cell -0.5, truncated to 0 as BEVFusion: kept, with offset -0.5
    assert targets.inds[0][0, 3] == 0 * 180 + 90
    assert targets.anno_boxes[0][0, 3, 0].item() == pytest.approx(-0.5, abs=1e-5)


def test_max_objs_keeps_the_first_objects():
    head = build(train_cfg__max_objs=2)
    targets = targets_of(head, [box(0, 0), box(10, 10), box(-10, -10)], [CAR, CAR, CAR])
    assert targets.masks[0].shape == (1, 2) and targets.masks[0].all()
    assert targets.heatmaps[0].eq(1).sum() == 2 and targets.heatmaps[0][0, 0, 73, 73] == 0


def test_object_mask_sums_all_class_heatmaps():
    head = build()
    boxes = [box(0.1, 0.1), box(1.3, 0.1, l=0.7, w=0.7, h=1.8)]
    targets = targets_of(head, boxes, [CAR, PEDESTRIAN])
    empty = (torch.zeros(0, 9), torch.zeros(0, dtype=torch.long))
    mask = head.object_mask([torch.tensor(boxes), empty[0]], [torch.tensor([CAR, PEDESTRIAN]), empty[1]])
    assert mask.shape == (2, 1, 180, 180)
    expected = targets.heatmaps[0][0, 0] + targets.heatmaps[5][0, 0]
    torch.testing.assert_close(mask[0, 0], expected)
    # car peak at cell (90, 90) and pedestrian peak two cells further along x: the sum exceeds 1 at both peaks
    assert mask[0, 0, 90, 90] > 1 and mask[0, 0, 92, 90] > 1
    assert mask[1].sum() == 0
    torch.testing.assert_close(head.heatmaps_to_object_mask(targets.heatmaps)[0], mask[0])


# ----------------------------------------------------------------------------------------------------- loss
TINY_YAML = """
type: CenterHead
in_channels: 8
tasks: [[car]]
common_heads: {reg: [2,2], height: [1,2], dim: [3,2], rot: [2,2], vel: [2,2]}
share_conv_channel: 4
separate_head: {type: SeparateHead, init_bias: -2.19, final_kernel: 3, head_conv: 4}
loss_cls: {type: GaussianFocalLoss, reduction: mean}
loss_bbox: {type: L1Loss, reduction: mean, loss_weight: 0.25}
bbox_coder: {type: CenterPointBBoxCoder, pc_range: [-16,-16,-5,16,16,3], out_size_factor: 8, voxel_size: [1,1],
             max_num: 10}
train_cfg: {grid_size: [32,32,1], out_size_factor: 8, gaussian_overlap: 0.1, max_objs: 3, min_radius: 0,
            code_weights: [1,1,1,1,1,1,1,1,0.2,0.2]}
"""


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_loss_against_hand_computation():
    head = MODELS.build(yaml.safe_load(TINY_YAML))
    # 4 x 4 map of 8 m cells; a 1 m car has radius 0: its heatmap is one-hot at cell ((-3+16)/8, (5+16)/8) = (1, 2)
    car = box(-3.0, 5.0, 0.7, l=1.2, w=0.8, h=1.5, yaw=2.0, vx=0.5, vy=-1.0)
    gt_boxes = [torch.tensor([car]), torch.zeros(0, 9)]
    gt_labels = [torch.tensor([0]), torch.zeros(0, dtype=torch.long)]
    logits = (torch.arange(32, dtype=torch.float32).reshape(2, 1, 4, 4) * 0.3 - 4.0)
    preds = [{"heatmap": logits.clone()}]
    values = [0.1 * (c + 1) for c in range(10)]
    for name, lo, hi in REG_CHANNELS:
        preds[0][name] = torch.tensor(values[lo:hi]).reshape(1, -1, 1, 1).expand(2, -1, 4, 4).clone()
    losses = head.loss(gt_boxes, gt_labels, preds)
    assert sorted(losses) == ["bbox/task0", "heatmap/task0"]

    focal = 0.0
    for b in range(2):
        for i in range(4):
            for j in range(4):
                p = min(max(_sigmoid(logits[b, 0, i, j].item()), 1e-4), 1 - 1e-4)
                focal += -math.log(p) * (1 - p) ** 2 if (b, i, j) == (0, 1, 2) else -math.log(1 - p) * p ** 2
    assert losses["heatmap/task0"].item() == pytest.approx(focal / 1, rel=1e-5)

    target = [13 / 8 - 1, 21 / 8 - 2, 0.7, math.log(1.2), math.log(0.8), math.log(1.5), math.sin(2.0), math.cos(2.0),
              0.5, -1.0]
    weights = [1] * 8 + [0.2, 0.2]
    l1 = sum(abs(v - t) * cw for v, t, cw in zip(values, target, weights))
    assert losses["bbox/task0"].item() == pytest.approx(0.25 * l1 / (1 + 1e-4), rel=1e-5)
    torch.testing.assert_close(preds[0]["heatmap"], logits)   # clip_sigmoid did not touch the predictions


def test_loss_masks_nan_targets_and_backpropagates():
    head = MODELS.build(yaml.safe_load(TINY_YAML))
    car = box(-3.0, 5.0, 0.7, l=1.2, w=0.8, h=1.5, yaw=2.0, vx=float("nan"), vy=-1.0)
    feats = torch.randn(1, 8, 4, 4, requires_grad=True)
    preds = head(feats)
    losses = head.loss([torch.tensor([car])], [torch.tensor([0])], preds)
    assert all(torch.isfinite(v) for v in losses.values())
    # same as the loss without the vx channel: subtract nothing, the NaN channel must weigh 0
    fixed = car[:7] + [0.0, -1.0]
    no_vx_target = head.loss([torch.tensor([fixed])], [torch.tensor([0])], preds)["bbox/task0"]
    vx_pred = preds[0]["vel"][0, 0, 1, 2].item()
    assert losses["bbox/task0"].item() == pytest.approx(
        no_vx_target.item() - 0.25 * 0.2 * abs(vx_pred) / (1 + 1e-4), rel=1e-5, abs=1e-7)
    sum(losses.values()).backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_clip_sigmoid_is_pure():
    x = torch.tensor([-20.0, 0.0, 20.0])
    out = clip_sigmoid(x)
    assert x.tolist() == [-20.0, 0.0, 20.0]
    assert out.tolist() == pytest.approx([1e-4, 0.5, 1 - 1e-4])


# ------------------------------------------------------------------------------------------------- decoding
def test_get_bboxes_decodes_perfect_predictions():
    head = build().eval()
    boxes = [box(10.3, -5.0, -0.9, yaw=0.4, vx=3.0, vy=-1.0),
             box(-30.2, 20.7, 0.3, l=9.0, w=2.6, h=3.2, yaw=-2.8, vx=-0.5),
             box(25.0, 30.0, 1.0, l=12.0, w=3.0, h=3.8, yaw=1.7),
             box(-5.0, -40.0, -0.4, l=0.5, w=2.4, h=1.0, yaw=3.1),
             box(40.1, -20.2, -0.6, l=1.7, w=0.6, h=1.3, yaw=-1.2, vx=1.0, vy=1.0),
             box(-12.0, 8.0, -0.2, l=0.7, w=0.7, h=1.8, yaw=0.9, vx=0.8),
             box(3.0, -15.0, -0.7, l=0.4, w=0.4, h=1.0)]
    labels = [CAR, TRUCK, BUS, BARRIER, BICYCLE, PEDESTRIAN, CONE]
    scores = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6]
    (result,) = head.get_bboxes(perfect_preds(head, boxes, labels, scores))
    assert result["labels_3d"].dtype == torch.int64 and result["boxes_3d"].shape == (7, 9)
    order = torch.argsort(result["scores_3d"], descending=True)
    assert result["labels_3d"][order].tolist() == labels
    np.testing.assert_allclose(result["scores_3d"][order].numpy(), scores, rtol=1e-5)
    got, want = result["boxes_3d"][order].numpy(), np.array(boxes)
    np.testing.assert_allclose(got[:, [0, 1, 2, 3, 4, 5, 7, 8]], want[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=1e-4)
    np.testing.assert_allclose(np.angle(np.exp(1j * (got[:, 6] - want[:, 6]))), 0, atol=1e-5)


def test_get_bboxes_circle_nms_on_cars():
    head = build().eval()
    # squared distances: (0,1) 1.0 <= 4 suppressed; (0,2) 9 > 4 kept; (2,3) 3.24 <= 4 suppressed
    boxes = [box(0.1, 0.1), box(1.1, 0.1), box(3.1, 0.1), box(3.1, 1.9)]
    scores = [0.9, 0.95, 0.5, 0.6]
    (result,) = head.get_bboxes(perfect_preds(head, boxes, [CAR] * 4, scores))
    np.testing.assert_allclose(sorted(result["scores_3d"].tolist()), [0.6, 0.95], rtol=1e-5)
    np.testing.assert_allclose(sorted(result["boxes_3d"][:, 0].tolist()), [1.1, 3.1], atol=1e-4)


def test_get_bboxes_nms_scale_merges_nearby_pedestrians():
    boxes = [box(0.1, 0.1, l=0.7, w=0.7, h=1.8), box(0.1, 1.0, l=0.7, w=0.7, h=1.8)]
    scores = [0.8, 0.7]
    scaled = build().eval()
    (result,) = scaled.get_bboxes(perfect_preds(scaled, boxes, [PEDESTRIAN] * 2, scores))
    # (l, w) x 2.5 = 1.75 m boxes 0.9 m apart: IoU 0.85 / 2.65 = 0.32 > 0.2 -> one survives, at its own size
    assert result["scores_3d"].tolist() == pytest.approx([0.8])
    np.testing.assert_allclose(result["boxes_3d"][0, 3:5].numpy(), [0.7, 0.7], atol=1e-4)
    plain = build(test_cfg__nms_scale=[[1.0], [1.0, 1.0], [1.0, 1.0], [1.0], [1.0, 1.0], [1.0, 1.0]]).eval()
    (result,) = plain.get_bboxes(perfect_preds(plain, boxes, [PEDESTRIAN] * 2, scores))
    assert sorted(result["scores_3d"].tolist()) == pytest.approx([0.7, 0.8])


# -------------------------------------------------------------------------------------------- small config
SMALL_YAML = """
type: CenterHead
in_channels: 32
tasks: [[car],[truck,construction_vehicle],[bus,trailer],[barrier],[motorcycle,bicycle],[pedestrian,traffic_cone]]
common_heads: {reg: [2,2], height: [1,2], dim: [3,2], rot: [2,2], vel: [2,2]}
share_conv_channel: 16
separate_head: {type: SeparateHead, init_bias: -2.19, final_kernel: 3, head_conv: 16}
loss_cls: {type: GaussianFocalLoss, reduction: mean}
loss_bbox: {type: L1Loss, reduction: mean, loss_weight: 0.25}
norm_bbox: true
bbox_coder: {type: CenterPointBBoxCoder, pc_range: [-51.2,-51.2,-5,51.2,51.2,3],
             post_center_range: [-60,-60,-10,60,60,10], max_num: 30, score_threshold: 0.1, out_size_factor: 8, voxel_size: [0.2,0.2], code_size: 9}
train_cfg: {point_cloud_range: [-51.2,-51.2,-5,51.2,51.2,3], grid_size: [512,512,1], voxel_size: [0.2,0.2,8],
            out_size_factor: 8, dense_reg: 1, gaussian_overlap: 0.1, max_objs: 50, min_radius: 2,
            code_weights: [1,1,1,1,1,1,1,1,0.2,0.2]}
test_cfg: {post_center_limit_range: [-60,-60,-10,60,60,10], max_pool_nms: false, min_radius: [4,12,10,1,0.85,0.175],
           score_threshold: 0.1, nms_type: [circle, rotate, rotate, circle, rotate, rotate], pre_max_size: 1000,
           post_max_size: 83, nms_thr: 0.2, nms_scale: [[1.0],[1.0,1.0],[1.0,1.0],[1.0],[1.0,1.0],[2.5,4.0]]}
"""


def test_small_grid_train_and_predict():
    torch.manual_seed(0)
    head = MODELS.build(yaml.safe_load(SMALL_YAML))
    gt_boxes = [torch.tensor([box(10.0, -3.0), box(-20.0, 12.0, l=0.7, w=0.7, h=1.8)]), torch.tensor([box(1, 1)])]
    gt_labels = [torch.tensor([CAR, PEDESTRIAN]), torch.tensor([TRUCK])]
    preds = head(torch.randn(2, 32, 64, 64))
    assert preds[0]["heatmap"].shape == (2, 1, 64, 64)
    losses = head.loss(gt_boxes, gt_labels, preds)
    assert len(losses) == 12
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert head.object_mask(gt_boxes, gt_labels).shape == (2, 1, 64, 64)

    head.eval()
    with torch.no_grad():
        results = head.get_bboxes(head(torch.randn(2, 32, 64, 64)))
    assert len(results) == 2
    for res in results:
        assert res["boxes_3d"].shape[1] == 9 and res["labels_3d"].dtype == torch.int64
        assert res["scores_3d"].shape == res["labels_3d"].shape == res["boxes_3d"].shape[:1]
    (decoded,) = head.get_bboxes(perfect_preds(head, gt_boxes[0].tolist(), [CAR, PEDESTRIAN], [0.9, 0.8]))
    order = torch.argsort(decoded["scores_3d"], descending=True)
    np.testing.assert_allclose(decoded["boxes_3d"][order].numpy(), gt_boxes[0].numpy(), atol=1e-4)
    assert decoded["labels_3d"][order].tolist() == [CAR, PEDESTRIAN]


# --------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("changes, message", [
    ({"test_cfg__max_pool_nms": True}, "max_pool_nms"),
    ({"common_heads": {"reg": [2, 2], "height": [1, 2], "dim": [3, 2], "rot": [2, 2]}}, "common_heads"),
    ({"train_cfg__voxel_size": [0.1, 0.1, 0.2]}, "voxel_size"),
    ({"train_cfg__dense_reg": 2}, "dense_reg"),
    ({"test_cfg__nms_scale": [[1.0]] * 6}, "nms_scale"),
    ({"test_cfg__nms_type": ["circle"] * 5}, "nms_type"),
    ({"test_cfg__nms_type": "square"}, "nms_type"),
    ({"bbox_coder__norm_bbox": False}, "norm_bbox"),
    ({"tasks": [[]]}, "task"),
])
def test_bad_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        build(**changes)


def test_bad_inputs():
    head = build()
    with pytest.raises(ValueError, match=r"gt_bboxes_3d\[0\]"):
        head.get_targets([torch.zeros(2, 7)], [torch.zeros(2, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"gt_labels_3d\[0\]"):
        head.get_targets([torch.zeros(2, 9)], [torch.zeros(3, dtype=torch.long)])
    with pytest.raises(ValueError, match="at least one sample"):
        head.get_targets([], [])
    small = [{"heatmap": torch.zeros(1, n, 90, 90), **{name: torch.zeros(1, hi - lo, 90, 90)
                                                      for name, lo, hi in REG_CHANNELS}} for n in head.num_classes]
    with pytest.raises(ValueError, match="grid_size"):
        head.loss([torch.zeros(0, 9)], [torch.zeros(0, dtype=torch.long)], small)
    with pytest.raises(ValueError, match="test_cfg"):
        build(test_cfg=None).get_bboxes(small)
