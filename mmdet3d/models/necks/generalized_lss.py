"""BEVFusion's camera neck: a top-down FPN that concatenates (rather than adds) the upsampled coarser level."""
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.registry import MODELS

from ..layers import ConvModule

__all__ = ["GeneralizedLSSFPN"]

_NORMS = ("BN", "BN2d")
_ACTS = ("ReLU",)


def _check_cfg(cfg, allowed, what):
    if cfg is not None and cfg.get("type") not in allowed:
        raise ValueError(f"GeneralizedLSSFPN: {what} type must be one of {allowed} or None, got {cfg!r}")
    return cfg is not None


@MODELS.register_module()
class GeneralizedLSSFPN(nn.Module):
    """Top-down over levels ``start_level..end_level``: for i from the second-coarsest level down,
    ``L[i] = fpn_convs[i](lateral_convs[i](cat[L[i], up(L[i+1])]))``. Returns the refined levels (all but the
    coarsest); level 0 is the one BEVFusion uses.
    """

    def __init__(self, in_channels, out_channels, num_outs, start_level=0, end_level=-1, no_norm_on_lateral=False,
                 norm_cfg=dict(type="BN2d"), act_cfg=dict(type="ReLU"),
                 upsample_cfg=dict(mode="bilinear", align_corners=True)):
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_outs = num_outs
        self.start_level = start_level
        self.end_level = len(self.in_channels) - 1 if end_level == -1 else end_level
        if not 0 <= start_level < self.end_level < len(self.in_channels):
            raise ValueError(f"GeneralizedLSSFPN: need 0 <= start_level ({start_level}) < end_level "
                             f"({self.end_level}) < {len(self.in_channels)} input levels")
        self.upsample_cfg = dict(upsample_cfg)
        norm = _check_cfg(norm_cfg, _NORMS, "norm_cfg")
        act = _check_cfg(act_cfg, _ACTS, "act_cfg")
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.end_level):
            coarser = self.in_channels[i + 1] if i == self.end_level - 1 else out_channels
            self.lateral_convs.append(ConvModule(self.in_channels[i] + coarser, out_channels, 1,
                                                 norm=norm and not no_norm_on_lateral, act=act))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, norm=norm, act=act))

    def forward(self, inputs):
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"GeneralizedLSSFPN: expected {len(self.in_channels)} input levels, got {len(inputs)}")
        levels = list(inputs[self.start_level:self.end_level + 1])
        for i in range(len(levels) - 2, -1, -1):
            up = F.interpolate(levels[i + 1], size=levels[i].shape[2:], **self.upsample_cfg)
            levels[i] = self.fpn_convs[i](self.lateral_convs[i](torch.cat([levels[i], up], dim=1)))
        return tuple(levels[:-1])
