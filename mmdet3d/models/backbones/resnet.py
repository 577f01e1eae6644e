"""ResNet image backbone built on torchvision (key names equal mmdet's ResNet, DCN stages included)."""
import torch
import torchvision
from torch import nn

from mmdet3d.registry import MODELS

from .dcn import ModulatedDeformConv2d
from .pretrained import load_backbone_state, pretrained_path

__all__ = ["ResNet"]

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
_STYLES = ("pytorch", "caffe")
# The pipeline's ImageNormalize statistics (configs/nuscenes/default.yaml) and caffe's BGR pixel means.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.530, 116.280, 123.675)


@MODELS.register_module()
class ResNet(nn.Module):
    """torchvision ResNet returning the outputs of stages ``out_indices`` (0 = ``layer1``, stride 4 ... 3 = stride 32).

    ``frozen_stages`` (-1: none, 0: stem, k: stem + layer1..k) sets ``requires_grad=False`` and keeps those layers in
    eval mode; ``norm_eval`` keeps every BatchNorm in eval mode. Weights come only from a local ``pretrained`` file
    (or ``init_cfg=dict(type="Pretrained", checkpoint=PATH)``), loaded at construction.

    Options of mmdet's ResNet that caffe-trained detectors (BEVFormer's ResNet-101-DCN) need:
        style: ``"pytorch"`` puts a bottleneck's stride on its 3x3 conv, ``"caffe"`` on its first 1x1 conv.
        dcn: ``dict(deform_groups=1)`` (or mmdet's ``dict(type="DCNv2", ...)``) makes the 3x3 conv (``conv2``) of
            every block in the stages where ``stage_with_dcn`` is true a modulated deformable conv (DCNv2).
        caffe_input: the stem turns the pipeline's ImageNet-normalised RGB into caffe's input (BGR, 0-255, mean
            subtracted, std 1), so that caffe-trained weights see the statistics they were trained on.
    """

    def __init__(self, depth=50, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False, style="pytorch",
                 dcn=None, stage_with_dcn=(False, False, False, False), caffe_input=False, pretrained=None,
                 init_cfg=None):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if any(not 0 <= i <= 3 for i in out_indices):
            raise ValueError(f"ResNet: out_indices {out_indices} outside 0..3")
        if style not in _STYLES:
            raise ValueError(f"ResNet: style must be one of {_STYLES}, got {style!r}")
        if len(stage_with_dcn) != 4:
            raise ValueError(f"ResNet: stage_with_dcn needs 4 entries (one per stage), got {list(stage_with_dcn)}")
        if any(stage_with_dcn) and dcn is None:
            raise ValueError("ResNet: stage_with_dcn is set but dcn is null; give dcn: {deform_groups: 1}")
        net = getattr(torchvision.models, _DEPTHS[depth])(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        for i, with_dcn in enumerate(stage_with_dcn):
            for block in getattr(self, f"layer{i + 1}"):
                if style == "caffe" and isinstance(block, torchvision.models.resnet.Bottleneck):
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
                if with_dcn:
                    block.conv2 = _deformable_like(block.conv2, dict(dcn))
        self.caffe_input = bool(caffe_input)
        if self.caffe_input:
            # x_caffe[c] = 255 * (x[2 - c] * std[2 - c] + mean[2 - c]) - caffe_mean[c], as one affine map
            scale = torch.tensor(IMAGENET_STD[::-1]) * 255
            shift = torch.tensor(IMAGENET_MEAN[::-1]) * 255 - torch.tensor(CAFFE_BGR_MEAN)
            self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)
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
        if self.caffe_input:
            x = x.flip(1) * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(max(self.out_indices) + 1):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def _deformable_like(conv, dcn):
    """A DCNv2 with the geometry of ``conv`` (a torchvision block's 3x3 conv)."""
    # mmdet's spelling, dict(type="DCNv2", deform_groups=1, fallback_on_stride=False), is accepted as well
    if dcn.pop("type", "DCNv2") != "DCNv2" or dcn.pop("fallback_on_stride", False):
        raise ValueError("ResNet: dcn must be modulated (type DCNv2) without fallback_on_stride")
    deform_groups = dcn.pop("deform_groups", 1)
    if dcn:
        raise ValueError(f"ResNet: unknown dcn keys {sorted(dcn)} (supported: type, deform_groups, "
                         "fallback_on_stride)")
    return ModulatedDeformConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                 padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                                 deform_groups=deform_groups, bias=conv.bias is not None)
