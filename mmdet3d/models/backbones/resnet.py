"""ResNet image backbone built on torchvision (key names equal mmdet's pytorch-style ResNet)."""
import torchvision
from torch import nn

from mmdet3d.registry import MODELS

from .pretrained import load_backbone_state, pretrained_path

__all__ = ["ResNet"]

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


@MODELS.register_module()
class ResNet(nn.Module):
    """torchvision ResNet returning the outputs of stages ``out_indices`` (0 = ``layer1``, stride 4 ... 3 = stride 32).

    ``frozen_stages`` (-1: none, 0: stem, k: stem + layer1..k) sets ``requires_grad=False`` and keeps those layers in
    eval mode; ``norm_eval`` keeps every BatchNorm in eval mode. Weights come only from a local ``pretrained`` file
    (or ``init_cfg=dict(type="Pretrained", checkpoint=PATH)``), loaded at construction.
    """

    def __init__(self, depth=50, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False, pretrained=None,
                 init_cfg=None):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if any(not 0 <= i <= 3 for i in out_indices):
            raise ValueError(f"ResNet: out_indices {out_indices} outside 0..3")
        net = getattr(torchvision.models, _DEPTHS[depth])(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained_path(pretrained, init_cfg, "ResNet")
        # At construction, not only through init_weights: mmengine's recursive init stops at the ModuleDicts that
        # hold the encoders, so a detector would otherwise keep a random backbone without a word.
        self.init_weights()
        self._freeze()

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def _freeze(self):
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def init_weights(self):
        """Load the configured pretrained checkpoint, if any."""
        if self.pretrained is not None:
            load_backbone_state(self, self.pretrained)

    def train(self, mode=True):
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(max(self.out_indices) + 1):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
