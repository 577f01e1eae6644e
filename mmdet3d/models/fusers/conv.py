"""BEVFusion's fuser: concatenate BEV maps along channels, then conv3x3 + BN + ReLU."""
import torch
from torch import nn

from mmdet3d.registry import MODELS

__all__ = ["ConvFuser"]


@MODELS.register_module()
class ConvFuser(nn.Sequential):
    """``forward([x_0, x_1, ...])`` with ``x_i`` [B, in_channels[i], X, Y] -> [B, out_channels, X, Y]."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.Conv2d(sum(in_channels), out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )
        self.in_channels = list(in_channels)

    def forward(self, inputs):
        channels = [x.shape[1] for x in inputs]
        if channels != self.in_channels:
            raise ValueError(f"ConvFuser: input channels {channels}, expected {self.in_channels}")
        return super().forward(torch.cat(inputs, dim=1))
