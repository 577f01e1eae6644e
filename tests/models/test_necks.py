import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.models.backbones import GeneralizedResNet
from mmdet3d.models.layers import ConvModule
from mmdet3d.models.necks import LSSFPN, GeneralizedLSSFPN
from mmdet3d.registry import MODELS


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
            nn.init.normal_(m.running_mean)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    return model.eval()


def conv_bn_relu(x, conv, bn, padding):
    x = F.conv2d(x, conv.weight, None, padding=padding)
    x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    return torch.relu(x * bn.weight[:, None, None] + bn.bias[:, None, None])


def test_generalized_lss_fpn_matches_hand_written_top_down():
    torch.manual_seed(0)
    neck = randomise_bn(MODELS.build(dict(
        type="GeneralizedLSSFPN", in_channels=[6, 10, 14], out_channels=8, start_level=0, num_outs=3,
        norm_cfg=dict(type="BN2d", requires_grad=True), act_cfg=dict(type="ReLU", inplace=True),
        upsample_cfg=dict(mode="bilinear", align_corners=False))))
    c2, c3, c4 = torch.randn(2, 6, 16, 22), torch.randn(2, 10, 8, 11), torch.randn(2, 14, 4, 6)
    outs = neck([c2, c3, c4])

    def step(fine, coarse, i):
        up = F.interpolate(coarse, size=fine.shape[2:], mode="bilinear", align_corners=False)
        lat = neck.lateral_convs[i]
        x = conv_bn_relu(torch.cat([fine, up], 1), lat.conv, lat.bn, 0)
        return conv_bn_relu(x, neck.fpn_convs[i].conv, neck.fpn_convs[i].bn, 1)

    l1 = step(c3, c4, 1)
    l0 = step(c2, l1, 0)
    assert len(outs) == 2
    torch.testing.assert_close(outs[0], l0)
    torch.testing.assert_close(outs[1], l1)
    assert neck.lateral_convs[1].conv.in_channels == 10 + 14 and neck.lateral_convs[0].conv.in_channels == 6 + 8
    assert neck.lateral_convs[0].conv.bias is None
    assert {"lateral_convs.0.conv.weight", "lateral_convs.1.bn.running_mean", "fpn_convs.1.conv.weight"} <= set(
        neck.state_dict())


def test_generalized_lss_fpn_rejects_bad_input():
    neck = GeneralizedLSSFPN([6, 10, 14], 8, num_outs=3)
    with pytest.raises(ValueError, match="3 input levels"):
        neck([torch.randn(1, 6, 8, 8), torch.randn(1, 10, 4, 4)])
    with pytest.raises(ValueError, match="norm_cfg"):
        GeneralizedLSSFPN([6, 10], 8, num_outs=1, norm_cfg=dict(type="GN"))


def test_generalized_lss_fpn_paper_shapes():
    neck = GeneralizedLSSFPN([192, 384, 768], 256, num_outs=3,
                             upsample_cfg=dict(mode="bilinear", align_corners=False)).eval()
    with torch.no_grad():
        outs = neck([torch.randn(6, 192, 32, 88), torch.randn(6, 384, 16, 44), torch.randn(6, 768, 8, 22)])
    assert [tuple(o.shape) for o in outs] == [(6, 256, 32, 88), (6, 256, 16, 44)]


def test_lss_fpn_matches_hand_written_fuse_and_upsample():
    torch.manual_seed(0)
    neck = randomise_bn(MODELS.build(dict(type="LSSFPN", in_indices=[-1, 0], in_channels=[12, 4], out_channels=6,
                                          scale_factor=2)))
    x0, x1, x2 = torch.randn(2, 4, 10, 12), torch.randn(2, 8, 5, 6), torch.randn(2, 12, 5, 6)
    out = neck([x0, x1, x2])
    x = torch.cat([F.interpolate(x2, size=(10, 12), mode="bilinear", align_corners=True), x0], 1)
    x = conv_bn_relu(x, neck.fuse[0], neck.fuse[1], 0)
    x = conv_bn_relu(x, neck.fuse[3], neck.fuse[4], 1)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    x = conv_bn_relu(x, neck.upsample[1], neck.upsample[2], 1)
    assert out.shape == (2, 6, 20, 24)
    torch.testing.assert_close(out, x)
    assert set(k.rsplit(".", 1)[0] for k in neck.state_dict()) == {"fuse.0", "fuse.1", "fuse.3", "fuse.4",
                                                                    "upsample.1", "upsample.2"}
    with pytest.raises(ValueError, match="channels"):
        neck([x0, x1, x1])


def test_decoder_small_config_shapes():
    decoder = nn.Sequential(GeneralizedResNet(32, [[2, 16, 2], [2, 32, 2], [2, 64, 1]]),
                            LSSFPN([-1, 0], [64, 16], 32, scale_factor=2)).eval()
    with torch.no_grad():
        out = decoder(torch.randn(2, 32, 36, 36))
    assert out.shape == (2, 32, 36, 36)


def test_decoder_paper_config_shapes():
    decoder = nn.Sequential(MODELS.build(dict(type="GeneralizedResNet", in_channels=256,
                                              blocks=[[2, 128, 2], [2, 256, 2], [2, 512, 1]])),
                            MODELS.build(dict(type="LSSFPN", in_indices=[-1, 0], in_channels=[512, 128],
                                              out_channels=256, scale_factor=2))).eval()
    with torch.no_grad():
        out = decoder(torch.randn(1, 256, 180, 180))
    assert out.shape == (1, 256, 180, 180)


def test_conv_module_layout():
    m = ConvModule(3, 4, 3, padding=1)
    assert set(m.state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                   "bn.num_batches_tracked"}
    assert m(torch.randn(2, 3, 5, 5)).min() >= 0
    plain = ConvModule(3, 4, 1, norm=False, act=False, conv_type="1d")
    assert isinstance(plain.conv, nn.Conv1d) and plain.conv.bias is not None and not hasattr(plain, "bn")
    x = torch.randn(2, 3, 7)
    torch.testing.assert_close(plain(x), plain.conv(x))
    with pytest.raises(ValueError, match="conv_type"):
        ConvModule(3, 4, 1, conv_type="3d")
