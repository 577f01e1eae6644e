"""Modulated deformable convolution (DCNv2) on ``torchvision.ops.deform_conv2d``.

Keys are mmcv's ``ModulatedDeformConv2dPack`` (``weight``, ``conv_offset.{weight,bias}``), so the released
ResNet-101-DCN weights load into it; ``conv_offset`` also predicts the modulation mask, laid out as mmcv does
(``[offset_part_1, offset_part_2, mask]`` along channels).
"""
import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["ModulatedDeformConv2d"]


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class ModulatedDeformConv2d(nn.Module):
    """A conv whose ``k x k`` sampling points move by learned offsets and are weighted by a learned mask in (0, 1).

    ``conv_offset`` starts at zero (mmcv's init): every point on the regular grid with mask 0.5.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
                 deform_groups=1, bias=False):
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % deform_groups:
            raise ValueError(f"ModulatedDeformConv2d: channels ({in_channels}, {out_channels}) must be divisible by "
                             f"groups ({groups}) and in_channels by deform_groups ({deform_groups})")
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        points = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 3 * points, self.kernel_size, stride=self.stride,
                                     padding=self.padding, dilation=self.dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        first, second, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        offset = torch.cat([first, second], dim=1)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask.sigmoid())

    def extra_repr(self):
        out_c, in_c = self.weight.shape[:2]
        return f"{in_c}, {out_c}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
