"""mmdet's FPN (the neck of BEVFormer's ResNet-101-DCN): lateral 1x1 convs, a top-down sum, 3x3 output convs and
extra stride-2 levels on top."""
import torch.nn.functional as F
from torch import nn

from mmdet3d.registry import MODELS

from ..layers import ConvModule

__all__ = ["FPN"]

_EXTRA_SOURCES = ("on_input", "on_lateral", "on_output")


@MODELS.register_module()
class FPN(nn.Module):
    """``num_outs`` levels of ``out_channels`` from the inputs ``start_level..``: P_i = fpn_conv(L_i + up(L_{i+1}))
    with nearest upsampling, then ``num_outs - len(inputs used)`` extra levels, each a stride-2 3x3 conv of the
    ``add_extra_convs`` source (BEVFormer: ``on_output``, the last P); ``relu_before_extra_convs`` puts a ReLU
    before the second and later extra convs only, as mmdet does (the first reads its source as it is). Keys
    ``lateral_convs.i.conv``, ``fpn_convs.i.conv`` as mmdet's."""

    def __init__(self, in_channels, out_channels, num_outs, start_level=0, add_extra_convs=False,
                 relu_before_extra_convs=False):
        super().__init__()
        self.in_channels = list(in_channels)
        self.start_level = start_level
        used = len(self.in_channels) - start_level
        if not 0 <= start_level < len(self.in_channels) or num_outs < used:
            raise ValueError(f"FPN: need 0 <= start_level ({start_level}) < {len(self.in_channels)} inputs and "
                             f"num_outs ({num_outs}) >= the {used} inputs used")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs and add_extra_convs not in _EXTRA_SOURCES:
            raise ValueError(f"FPN: add_extra_convs must be false or one of {_EXTRA_SOURCES}, got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1, norm=False, act=False)
                                            for c in self.in_channels[start_level:]])
        self.fpn_convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3, padding=1, norm=False, act=False)
                                        for _ in range(used)])
        if add_extra_convs:
            for i in range(num_outs - used):
                source = self.in_channels[-1] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(ConvModule(source, out_channels, 3, stride=2, padding=1, norm=False, act=False))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs):
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN: expected {len(self.in_channels)} input levels, got {len(inputs)}")
        inputs = list(inputs[self.start_level:])
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                              mode="nearest")
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        if not self.add_extra_convs:
            # mmdet: max-pool with stride 2 for the extra levels
            while len(outs) < self.num_outs:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return tuple(outs)
        source = {"on_input": inputs[-1], "on_lateral": laterals[-1], "on_output": outs[-1]}[self.add_extra_convs]
        extra = self.fpn_convs[len(laterals):]
        outs.append(extra[0](source))
        for conv in extra[1:]:
            outs.append(conv(F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return tuple(outs)
