import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.models.fusers import ConvFuser
from mmdet3d.registry import MODELS


def test_conv_fuser_is_conv_bn_relu_on_camera_first_concat():
    torch.manual_seed(0)
    fuser = MODELS.build(dict(type="ConvFuser", in_channels=[3, 5], out_channels=4))
    nn.init.uniform_(fuser[1].weight, 0.5, 1.5)
    nn.init.normal_(fuser[1].running_mean)
    fuser.eval()
    cam, lidar = torch.randn(2, 3, 6, 7), torch.randn(2, 5, 6, 7)
    out = fuser([cam, lidar])
    x = F.conv2d(torch.cat([cam, lidar], 1), fuser[0].weight, padding=1)
    bn = fuser[1]
    x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected = torch.relu(x * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(out, expected)
    assert fuser[0].bias is None and set(fuser.state_dict()) >= {"0.weight", "1.running_var"}
    with torch.no_grad():  # input 0 feeds weight columns 0..2: zero them and the camera map no longer matters
        fuser[0].weight[:, :3] = 0
    torch.testing.assert_close(fuser([torch.randn_like(cam), lidar]), fuser([cam, lidar]))


def test_conv_fuser_checks_channels():
    with pytest.raises(ValueError, match=r"\[5, 3\]"):
        ConvFuser([3, 5], 4)([torch.randn(1, 5, 2, 2), torch.randn(1, 3, 2, 2)])


@pytest.mark.parametrize("in_channels,out_channels", [([80, 256], 256), ([80, 80], 256), ([80], 256)])
def test_conv_fuser_paper_configs(in_channels, out_channels):
    fuser = ConvFuser(in_channels, out_channels).eval()
    with torch.no_grad():
        out = fuser([torch.randn(1, c, 180, 180) for c in in_channels])
    assert out.shape == (1, out_channels, 180, 180) and (out >= 0).all()
