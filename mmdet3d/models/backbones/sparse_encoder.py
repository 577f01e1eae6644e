"""BEVFusion's LiDAR backbone: 3D sparse convolutions over voxels, flattened to a BEV map [B, C*Z, X, Y]."""
from torch import nn

# the shim applies spconv's CPU workarounds on import; it does not re-export the SparseModule base class
from mmdet3d.ops.spconv import SparseConv3d, SparseConvTensor, SparseSequential, SubMConv3d
from mmdet3d.registry import MODELS
from spconv.pytorch import SparseModule

__all__ = ["SparseBasicBlock", "SparseEncoder"]


def _norm(channels, norm_cfg):
    return nn.BatchNorm1d(channels, eps=norm_cfg.get("eps", 1e-3), momentum=norm_cfg.get("momentum", 0.01))


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def sparse_conv_module(in_channels, out_channels, kernel_size, norm_cfg, stride=1, padding=0, indice_key=None,
                       subm=True):
    """SparseSequential(conv without bias, BN1d, ReLU): keys ``0.weight``, ``1.*`` as mmdet3d's helper."""
    conv = SubMConv3d if subm else SparseConv3d
    return SparseSequential(
        conv(in_channels, out_channels, _as_tuple(kernel_size), stride=_as_tuple(stride),
             padding=_as_tuple(padding), bias=False, indice_key=indice_key),
        _norm(out_channels, norm_cfg),
        nn.ReLU(inplace=True),
    )


class SparseBasicBlock(SparseModule):
    """Submanifold conv3-BN-ReLU-conv3-BN plus identity, then ReLU (mmdet3d's key names conv1/bn1/conv2/bn2)."""

    def __init__(self, channels, norm_cfg, indice_key=None):
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn1 = _norm(channels, norm_cfg)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn2 = _norm(channels, norm_cfg)

    def forward(self, x):
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + identity))


@MODELS.register_module()
class SparseEncoder(nn.Module):
    """``conv_input`` -> ``encoder_layers.encoder_layer{i}`` -> ``conv_out`` (kernel (1,1,3), stride (1,1,2) in z).

    ``sparse_shape`` is (X, Y, Z) and voxel coordinates are (batch, x, y, z). With ``block_type="basicblock"``
    each stage is residual blocks followed (except in the last stage) by a stride-2 sparse conv whose padding is
    the stage's last ``encoder_paddings`` entry; with ``"conv_module"`` each stage after the first starts with the
    stride-2 conv. Output: the dense map permuted to [B, C*Z', X', Y'] (channel index c*Z' + z).
    """

    def __init__(self, in_channels, sparse_shape, order=("conv", "norm", "act"),
                 norm_cfg=dict(type="BN1d", eps=1e-3, momentum=0.01), base_channels=16, output_channels=128,
                 encoder_channels=((16,), (32, 32, 32), (64, 64, 64), (64, 64, 64)),
                 encoder_paddings=((1,), (1, 1, 1), (1, 1, 1), ((0, 1, 1), 1, 1)), block_type="conv_module"):
        super().__init__()
        if tuple(order) != ("conv", "norm", "act"):
            raise ValueError(f"SparseEncoder: only order ('conv', 'norm', 'act') is supported, got {order}")
        if norm_cfg.get("type") not in ("BN1d", "BN"):
            raise ValueError(f"SparseEncoder: norm_cfg type must be BN1d, got {norm_cfg!r}")
        if block_type not in ("conv_module", "basicblock"):
            raise ValueError(f"SparseEncoder: block_type must be 'conv_module' or 'basicblock', got {block_type!r}")
        if len(encoder_channels) != len(encoder_paddings) or any(
                len(c) != len(p) for c, p in zip(encoder_channels, encoder_paddings)):
            raise ValueError("SparseEncoder: encoder_channels and encoder_paddings must have the same structure")
        self.sparse_shape = list(sparse_shape)
        self.in_channels = in_channels
        self.conv_input = sparse_conv_module(in_channels, base_channels, 3, norm_cfg, padding=1, indice_key="subm1")
        channels = base_channels
        self.encoder_layers = SparseSequential()
        last = len(encoder_channels) - 1
        for i, (stage_channels, stage_paddings) in enumerate(zip(encoder_channels, encoder_paddings)):
            blocks = []
            for j, (out_channels, padding) in enumerate(zip(stage_channels, stage_paddings)):
                if block_type == "basicblock" and j == len(stage_channels) - 1 and i != last:
                    blocks.append(sparse_conv_module(channels, out_channels, 3, norm_cfg, stride=2, padding=padding,
                                                     indice_key=f"spconv{i + 1}", subm=False))
                elif block_type == "basicblock":
                    if out_channels != channels:
                        raise ValueError(f"SparseEncoder: residual block {i}.{j} needs {channels} channels in and "
                                         f"out, got {out_channels}")
                    blocks.append(SparseBasicBlock(out_channels, norm_cfg, indice_key=f"subm{i + 1}"))
                elif i != 0 and j == 0:
                    blocks.append(sparse_conv_module(channels, out_channels, 3, norm_cfg, stride=2, padding=padding,
                                                     indice_key=f"spconv{i + 1}", subm=False))
                else:
                    blocks.append(sparse_conv_module(channels, out_channels, 3, norm_cfg, padding=padding,
                                                     indice_key=f"subm{i + 1}"))
                channels = out_channels
            self.encoder_layers.add_module(f"encoder_layer{i + 1}", SparseSequential(*blocks))
        self.conv_out = sparse_conv_module(channels, output_channels, (1, 1, 3), norm_cfg, stride=(1, 1, 2),
                                           indice_key="spconv_down2", subm=False)

    def forward(self, voxel_features, coors, batch_size):
        """voxel_features [M, in_channels], coors [M, 4] int (batch, x, y, z) -> [B, C*Z', X', Y']."""
        if voxel_features.dim() != 2 or voxel_features.shape[1] != self.in_channels:
            raise ValueError(f"SparseEncoder: voxel_features must be [M, {self.in_channels}], "
                             f"got {list(voxel_features.shape)}")
        if coors.dim() != 2 or coors.shape[1] != 4 or coors.shape[0] != voxel_features.shape[0]:
            raise ValueError(f"SparseEncoder: coors must be [{voxel_features.shape[0]}, 4], got {list(coors.shape)}")
        x = SparseConvTensor(voxel_features, coors.int(), self.sparse_shape, batch_size)
        x = self.conv_out(self.encoder_layers(self.conv_input(x)))
        dense = x.dense()
        b, c, nx, ny, nz = dense.shape
        return dense.permute(0, 1, 4, 2, 3).reshape(b, c * nz, nx, ny)
