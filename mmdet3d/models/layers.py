"""Small building blocks shared by the model modules."""
from torch import nn

__all__ = ["ConvModule"]

_CONV = {"1d": nn.Conv1d, "2d": nn.Conv2d}
_NORM = {"1d": nn.BatchNorm1d, "2d": nn.BatchNorm2d}


class ConvModule(nn.Sequential):
    """Conv -> BatchNorm -> ReLU, the configurations of mmcv's ``ConvModule`` that BEVFusion uses.

    The conv has a bias only when there is no norm (mmcv's ``bias="auto"``). The submodule names ``conv``, ``bn``
    and ``activate`` match mmcv's, so BEVFusion checkpoints load without a key map.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, norm=True, act=True,
                 conv_type="2d", bn_eps=1e-5, bn_momentum=0.1):
        if conv_type not in _CONV:
            raise ValueError(f"ConvModule: conv_type must be one of {sorted(_CONV)}, got {conv_type!r}")
        super().__init__()
        self.conv = _CONV[conv_type](in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                     bias=not norm)
        if norm:
            self.bn = _NORM[conv_type](out_channels, eps=bn_eps, momentum=bn_momentum)
        if act:
            self.activate = nn.ReLU(inplace=True)
