"""Gaussian focal loss (CornerNet / CenterNet) on heatmaps with Gaussian-splatted targets."""
from torch import nn

from mmdet3d.registry import MODELS

from .utils import REDUCTIONS, weight_reduce_loss

__all__ = ["GaussianFocalLoss", "gaussian_focal_loss"]


def gaussian_focal_loss(pred, target, alpha=2.0, gamma=4.0, eps=1e-12):
    """Element-wise loss of probabilities ``pred`` against a target heatmap in [0, 1]; cells equal to 1 are the
    positives, the others are negatives down-weighted by ``(1 - target) ** gamma``."""
    pos = target.eq(1).to(pred.dtype)
    neg_weight = (1 - target).pow(gamma)
    pos_loss = -(pred + eps).log() * (1 - pred).pow(alpha) * pos
    neg_loss = -(1 - pred + eps).log() * pred.pow(alpha) * neg_weight
    return pos_loss + neg_loss


@MODELS.register_module()
class GaussianFocalLoss(nn.Module):
    """``loss_weight * reduce(gaussian_focal_loss(pred, target) * weight)``; ``pred`` are probabilities."""

    def __init__(self, alpha=2.0, gamma=4.0, reduction="mean", loss_weight=1.0):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"GaussianFocalLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        reduction = reduction_override or self.reduction
        loss = gaussian_focal_loss(pred, target, self.alpha, self.gamma)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)
