"""BEVFusion's BEV decoder neck: fuse two decoder levels at the finer one's size, then upsample."""
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.registry import MODELS

__all__ = ["LSSFPN"]


@MODELS.register_module()
class LSSFPN(nn.Module):
    """``fuse(cat[resize(x[in_indices[0]]), x[in_indices[1]]])`` then, if ``scale_factor > 1``, ``upsample``.

    Both resizes are bilinear with ``align_corners=True`` (as BEVFusion); key names ``fuse.{0,1,3,4}`` and
    ``upsample.{1,2}`` match its checkpoints.
    """

    def __init__(self, in_indices, in_channels, out_channels, scale_factor=1):
        super().__init__()
        if len(in_indices) != 2 or len(in_channels) != 2:
            raise ValueError(f"LSSFPN: in_indices {in_indices} and in_channels {in_channels} must have 2 entries")
        self.in_indices = list(in_indices)
        self.in_channels = list(in_channels)
        self.scale_factor = scale_factor
        self.fuse = nn.Sequential(
            nn.Conv2d(sum(in_channels), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )
        if scale_factor > 1:
            self.upsample = nn.Sequential(
                nn.Upsample(scale_factor=scale_factor, mode="bilinear", align_corners=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(True),
            )

    def forward(self, x):
        coarse, fine = x[self.in_indices[0]], x[self.in_indices[1]]
        for name, t, c in (("first", coarse, self.in_channels[0]), ("second", fine, self.in_channels[1])):
            if t.shape[1] != c:
                raise ValueError(f"LSSFPN: {name} input has {t.shape[1]} channels, expected {c}")
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=True)
        x = self.fuse(torch.cat([coarse, fine], dim=1))
        if self.scale_factor > 1:
            x = self.upsample(x)
        return x
