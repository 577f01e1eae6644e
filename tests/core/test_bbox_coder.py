import math

import numpy as np
import pytest
import torch

from mmdet3d.core.bbox_coder import CenterPointBBoxCoder

PAPER = dict(pc_range=[-54, -54, -5, 54, 54, 3], post_center_range=[-61.2, -61.2, -10, 61.2, 61.2, 10], max_num=500,
             score_threshold=0.1, out_size_factor=8, voxel_size=[0.075, 0.075], code_size=9)


def test_encode_hand_computed():
    coder = CenterPointBBoxCoder(**PAPER)
    box = torch.tensor([[10.3, -5.0, -0.8, 4.5, 1.9, 1.6, 0.3, 2.0, -1.0]], dtype=torch.float64)
    cells = coder.centers_to_cells(box[:, :2])
    # (10.3 + 54) / 0.6 = 107.1667, (-5 + 54) / 0.6 = 81.6667
    np.testing.assert_allclose(cells.numpy(), [[64.3 / 0.6, 49.0 / 0.6]])
    code = coder.encode(box, torch.tensor([[107, 81]]))
    expected = [64.3 / 0.6 - 107, 49.0 / 0.6 - 81, -0.8, math.log(4.5), math.log(1.9), math.log(1.6),
                math.sin(0.3), math.cos(0.3), 2.0, -1.0]
    np.testing.assert_allclose(code.numpy()[0], expected, atol=1e-12)
    raw = CenterPointBBoxCoder(**PAPER, norm_bbox=False).encode(box, torch.tensor([[107, 81]]))
    np.testing.assert_allclose(raw.numpy()[0, 3:6], [4.5, 1.9, 1.6])


def _perfect_maps(coder, boxes, labels, scores, num_cls, size):
    """Dense prediction maps holding each box's code at its cell, as a perfect network would output."""
    cells = coder.centers_to_cells(boxes[:, :2])
    cells_int = cells.long()
    code = coder.encode(boxes, cells_int)
    maps = {name: torch.zeros(1, ch, *size) for name, ch in
            [("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2)]}
    heat = torch.zeros(1, num_cls, *size)
    for k in range(boxes.shape[0]):
        i, j = cells_int[k].tolist()
        heat[0, labels[k], i, j] = scores[k]
        maps["reg"][0, :, i, j] = code[k, 0:2]
        maps["height"][0, :, i, j] = code[k, 2:3]
        maps["dim"][0, :, i, j] = code[k, 3:6]
        maps["rot"][0, :, i, j] = code[k, 6:8]
        maps["vel"][0, :, i, j] = code[k, 8:10]
    return heat, maps


def test_round_trip_all_yaw_quadrants():
    coder = CenterPointBBoxCoder(**PAPER)
    yaws = [0.3, 1.9, 3.0, -2.5, -0.7, math.pi / 2, -math.pi / 2, 0.0]
    boxes = torch.tensor([[-40.0 + 11.3 * k, 35.0 - 9.7 * k, -1.5 + 0.4 * k, 4.0 + 0.5 * k, 1.8 + 0.1 * k,
                           1.5 + 0.2 * k, yaw, 3.0 - k, -2.0 + 0.6 * k] for k, yaw in enumerate(yaws)])
    labels = [0, 1, 1, 0, 1, 0, 0, 1]
    scores = [0.9 - 0.05 * k for k in range(len(yaws))]
    heat, maps = _perfect_maps(coder, boxes, labels, scores, 2, (180, 180))
    (det,) = coder.decode(heat, maps["rot"][:, 0:1], maps["rot"][:, 1:2], maps["height"], maps["dim"], maps["vel"],
                          maps["reg"])
    assert det["bboxes"].shape == (len(yaws), 9)
    # scores are distinct and decreasing with k, so the decoded order is the input order
    np.testing.assert_allclose(det["scores"].numpy(), scores, atol=1e-7)
    assert det["labels"].tolist() == labels and det["labels"].dtype == torch.int64
    got = det["bboxes"].numpy()
    want = boxes.numpy()
    np.testing.assert_allclose(got[:, [0, 1, 2, 3, 4, 5, 7, 8]], want[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=1e-4)
    yaw_err = np.angle(np.exp(1j * (got[:, 6] - want[:, 6])))
    np.testing.assert_allclose(yaw_err, 0, atol=1e-5)


def test_round_trip_small_grid_non_square():
    coder = CenterPointBBoxCoder(pc_range=[-25.6, -12.8], out_size_factor=4, voxel_size=[0.2, 0.1], max_num=20,
                                 score_threshold=0.05, post_center_range=[-30, -15, -5, 30, 15, 5])
    assert coder.cell_size == pytest.approx((0.8, 0.4))
    boxes = torch.tensor([[20.1, 10.3, 0.2, 2.0, 1.0, 1.0, 2.2, 0.5, 0.1],
                          [-25.5, -12.7, -0.3, 0.7, 0.6, 1.7, -1.0, 0.0, 0.0]])
    heat, maps = _perfect_maps(coder, boxes, [0, 0], [0.8, 0.6], 1, (64, 64))
    (det,) = coder.decode(heat, maps["rot"][:, 0:1], maps["rot"][:, 1:2], maps["height"], maps["dim"], maps["vel"],
                          maps["reg"])
    np.testing.assert_allclose(det["bboxes"].numpy(), boxes.numpy(), atol=1e-4)


def test_decode_axis_convention_and_cell_centres_without_reg():
    coder = CenterPointBBoxCoder(**PAPER)
    heat = torch.zeros(1, 1, 180, 180)
    heat[0, 0, 123, 45] = 0.7   # row 123 -> x, column 45 -> y
    zeros = torch.zeros(1, 1, 180, 180)
    (det,) = coder.decode(heat, zeros, zeros + 1, zeros, torch.zeros(1, 3, 180, 180))
    x, y = det["bboxes"][0, :2].tolist()
    assert x == pytest.approx(-54 + 123.5 * 0.6, abs=1e-4) and y == pytest.approx(-54 + 45.5 * 0.6, abs=1e-4)
    np.testing.assert_allclose(det["bboxes"][0, 3:].numpy(), [1, 1, 1, 0, 0, 0], atol=1e-7)


def test_decode_topk_threshold_and_range():
    coder = CenterPointBBoxCoder(pc_range=[-8, -8], out_size_factor=1, voxel_size=[1, 1], max_num=3,
                                 score_threshold=0.2, post_center_range=[-6, -8, -1, 8, 8, 1])
    heat = torch.zeros(2, 2, 16, 16)
    heat[0, 0, 10, 10] = 0.9
    heat[0, 1, 3, 3] = 0.8
    heat[0, 0, 0, 5] = 0.85     # x = -7.5: outside post_center_range
    heat[0, 1, 7, 7] = 0.5      # 4th best: beyond max_num
    heat[1, 0, 4, 4] = 0.2      # not strictly above the threshold
    heat[1, 1, 5, 6] = 0.21
    zeros = torch.zeros(2, 1, 16, 16)
    dets = coder.decode(heat, zeros, zeros + 1, zeros, torch.zeros(2, 3, 16, 16))
    assert dets[0]["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert dets[0]["labels"].tolist() == [0, 1]
    np.testing.assert_allclose(dets[0]["bboxes"][:, :2].numpy(), [[2.5, 2.5], [-4.5, -4.5]])
    assert dets[1]["scores"].tolist() == pytest.approx([0.21]) and dets[1]["labels"].tolist() == [1]
    np.testing.assert_allclose(dets[1]["bboxes"][:, :2].numpy(), [[-2.5, -1.5]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="code_size"):
        CenterPointBBoxCoder(**dict(PAPER, code_size=7))
    with pytest.raises(ValueError, match="post_center_range"):
        CenterPointBBoxCoder(**dict(PAPER, post_center_range=[0, 0, 0]))
