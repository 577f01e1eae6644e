"""BEVFusion's BEV decoder backbone: stages of torchvision-style BasicBlocks."""
from torch import nn

from mmdet3d.registry import MODELS

__all__ = ["BasicBlock", "GeneralizedResNet"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (1x1 conv + BN when shapes change) shortcut, then ReLU (mmcv's layout)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@MODELS.register_module()
class GeneralizedResNet(nn.ModuleList):
    """Stages given as ``blocks=[[num_blocks, out_channels, stride], ...]``; returns every stage's output.

    Only a stage's first block changes stride or width (mmcv's ``make_res_layer``); keys are
    ``{stage}.{block}.conv1.weight`` etc., as in BEVFusion's ``decoder.backbone``.
    """

    def __init__(self, in_channels, blocks):
        super().__init__()
        for num_blocks, out_channels, stride in blocks:
            layers = [BasicBlock(in_channels, out_channels, stride)]
            layers += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
            self.append(nn.Sequential(*layers))
            in_channels = out_channels

    def forward(self, x):
        outputs = []
        for stage in self:
            x = stage(x)
            outputs.append(x)
        return outputs
