"""Depth scores of a view transform's distributions against LiDAR bins, by hand."""
import pytest
import torch

from mmdet3d.analysis.depth_quality import depth_quality


def test_depth_quality_by_hand():
    """Cell A: one-hot on its LiDAR bin 0; cell B: uniform, LiDAR bin 3; cell C: no LiDAR point (not scored)."""
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.0, 0.0, 1.0, 0.0]]).T[None]  # [1, D=4, 3 cells]
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0] * 4]).T[None]
    out = depth_quality(probs, target, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert out["cells"] == 2
    assert out["p_lidar_bin"] == pytest.approx((1.0 + 0.25) / 2)
    assert out["p_within_one_bin"] == pytest.approx((1.0 + 0.5) / 2)  # A: bins 0-1, B: bins 2-3
    assert out["expected_depth_mae_m"] == pytest.approx((0.0 + 1.5) / 2)  # B: E = 2.5 against 4
    assert out["uniform_p_lidar_bin"] == 0.25 and out["uniform_p_within_one_bin"] == pytest.approx(0.5)
    assert out["uniform_expected_depth_mae_m"] == pytest.approx(1.5)


def test_depth_quality_needs_a_lidar_cell():
    with pytest.raises(ValueError, match="no feature cell"):
        depth_quality(torch.full((1, 4, 2), 0.25), torch.zeros(1, 4, 2), torch.arange(4.0))
