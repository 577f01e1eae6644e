"""L1 loss with element weights and an averaging factor."""
from torch import nn

from mmdet3d.registry import MODELS

from .utils import REDUCTIONS, weight_reduce_loss

__all__ = ["L1Loss"]


@MODELS.register_module()
class L1Loss(nn.Module):
    """``loss_weight * reduce(|pred - target| * weight)``."""

    def __init__(self, reduction="mean", loss_weight=1.0):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"L1Loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        if pred.shape != target.shape:
            raise ValueError(f"L1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        reduction = reduction_override or self.reduction
        loss = (pred - target).abs()
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)
