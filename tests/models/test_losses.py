import math

import pytest
import torch

from mmdet3d.models.losses import GaussianFocalLoss, L1Loss, gaussian_focal_loss, weight_reduce_loss
from mmdet3d.registry import MODELS

PRED = [[0.9, 0.2], [0.5, 0.1]]
TARGET = [[1.0, 0.5], [0.0, 0.8]]


def _focal_by_hand(p, t, alpha=2, gamma=4):
    if t == 1.0:
        return -math.log(p) * (1 - p) ** alpha
    return -math.log(1 - p) * p ** alpha * (1 - t) ** gamma


def test_gaussian_focal_loss_elementwise_hand_values():
    out = gaussian_focal_loss(torch.tensor(PRED, dtype=torch.float64), torch.tensor(TARGET, dtype=torch.float64))
    # e.g. the positive: -log(0.9) * 0.1^2 = 0.0010536; the 0.5-target negative: -log(0.8) * 0.04 * 0.0625
    assert out[0, 0].item() == pytest.approx(0.0010536051565782628, rel=1e-9)
    assert out[0, 1].item() == pytest.approx(-math.log(0.8) * 0.04 * 0.0625, rel=1e-9)
    for i in range(2):
        for j in range(2):
            assert out[i, j].item() == pytest.approx(_focal_by_hand(PRED[i][j], TARGET[i][j]), rel=1e-9)


def test_gaussian_focal_loss_module_reductions():
    pred, target = torch.tensor(PRED), torch.tensor(TARGET)
    total = sum(_focal_by_hand(PRED[i][j], TARGET[i][j]) for i in range(2) for j in range(2))
    loss = MODELS.build({"type": "GaussianFocalLoss", "reduction": "mean"})
    assert isinstance(loss, GaussianFocalLoss) and loss.alpha == 2 and loss.gamma == 4
    assert loss(pred, target).item() == pytest.approx(total / 4, rel=1e-5)
    assert loss(pred, target, avg_factor=3.0).item() == pytest.approx(total / 3, rel=1e-5)
    assert loss(pred, target, reduction_override="sum").item() == pytest.approx(total, rel=1e-5)
    weighted = GaussianFocalLoss(loss_weight=0.5)(pred, target, weight=torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                                                  avg_factor=1.0)
    assert weighted.item() == pytest.approx(0.5 * _focal_by_hand(0.9, 1.0), rel=1e-5)
    assert GaussianFocalLoss(reduction="none")(pred, target).shape == (2, 2)


def test_l1_loss_hand_values():
    pred = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    target = torch.tensor([[0.5, -1.0, 0.5], [2.0, 3.0, -1.0]])
    # |d| = [[0.5, 1, 0], [2, 0, 2]], sum 5.5
    assert L1Loss()(pred, target).item() == pytest.approx(5.5 / 6)
    assert L1Loss(reduction="sum")(pred, target).item() == pytest.approx(5.5)
    weight = torch.tensor([[1.0, 0.2, 1.0], [0.0, 1.0, 1.0]])
    loss = MODELS.build({"type": "L1Loss", "reduction": "mean", "loss_weight": 0.25})
    assert loss(pred, target, weight, avg_factor=2.0).item() == pytest.approx(0.25 * (0.5 + 0.2 + 2.0) / 2.0)
    assert L1Loss(reduction="none")(pred, target).tolist() == [[0.5, 1.0, 0.0], [2.0, 0.0, 2.0]]


def test_bad_reductions_and_shapes():
    with pytest.raises(ValueError, match="reduction"):
        L1Loss(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        GaussianFocalLoss(reduction="max")
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce_loss(torch.ones(3), reduction="sum", avg_factor=2.0)
    with pytest.raises(ValueError, match="shape"):
        L1Loss()(torch.ones(2, 3), torch.ones(3, 2))
