"""DCNv2 (``backbones/dcn.py``) against a brute-force convolution, and the ResNet options that BEVFormer's
ResNet-101-DCN needs: DCN stages, caffe style, caffe input, mmdet/mmcv key names and B.4's shapes."""
import pytest
import torch
from torchvision.ops import deform_conv2d

from mmdet3d.models.backbones import ResNet
from mmdet3d.models.backbones.dcn import ModulatedDeformConv2d


def brute_conv(x, weight, stride, padding, dilation, shift=(0, 0)):
    """Direct sum over the kernel, every tap read ``shift`` = (dy, dx) pixels away (zeros outside the image)."""
    b, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    out_h = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = torch.zeros(b, out_c, out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        for j in range(out_w):
            for ky in range(kh):
                for kx in range(kw):
                    y = i * stride - padding + ky * dilation + shift[0]
                    xx = j * stride - padding + kx * dilation + shift[1]
                    if 0 <= y < h and 0 <= xx < w:
                        out[:, :, i, j] += x[:, :, y, xx].double() @ weight[:, :, ky, kx].double().t()
    return out


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_deform_conv_with_zero_offsets_and_unit_mask_is_a_plain_conv(stride, padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9)
    weight = torch.randn(4, 3, 3, 3)
    out_h = (7 + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (9 + 2 * padding - 2 * dilation - 1) // stride + 1
    offset = torch.zeros(2, 18, out_h, out_w)
    mask = torch.ones(2, 9, out_h, out_w)
    out = deform_conv2d(x, offset, weight, stride=stride, padding=padding, dilation=dilation, mask=mask)
    torch.testing.assert_close(out.double(), brute_conv(x, weight, stride, padding, dilation), atol=1e-4, rtol=1e-4)


def test_module_offsets_are_mmcv_layout_dy_dx_per_tap():
    """conv_offset's first 2 x 9 channels are (dy, dx) pairs per kernel tap, the last 9 the mask logits: a bias of
    dx = +1 everywhere reads every tap one pixel to the right."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 6, 8)
    with torch.no_grad():
        dcn.conv_offset.bias[1:18:2] = 1.0   # dx of taps 0..8
        dcn.conv_offset.bias[18:] = 30.0     # mask sigmoid(30) = 1
    torch.testing.assert_close(dcn(x).double(), brute_conv(x, dcn.weight, 1, 1, 1, shift=(0, 1)), atol=1e-4,
                               rtol=1e-4)


def test_module_starts_as_half_the_plain_conv():
    """mmcv's init: zero offsets, mask logits 0, so the output is 0.5 x the regular conv."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(1, 3, 9, 10)
    torch.testing.assert_close(dcn(x).double(), 0.5 * brute_conv(x, dcn.weight, 2, 1, 1), atol=1e-4, rtol=1e-4)
    assert dcn.conv_offset.weight.shape == (27, 3, 3, 3) and dcn.bias is None


def test_resnet101_dcn_caffe_keys_shapes_and_outputs():
    """VARIANTS.md B.1/B.4: DCN in stages 3-4 (conv2 + conv_offset [27, p, 3, 3]), caffe strides, C3-C5 outputs."""
    net = ResNet(depth=101, out_indices=(1, 2, 3), style="caffe", dcn=dict(type="DCNv2", deform_groups=1,
                 fallback_on_stride=False), stage_with_dcn=(False, False, True, True), frozen_stages=1,
                 norm_eval=True).eval()
    state = net.state_dict()
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    for stage, planes in ((3, 256), (4, 512)):
        for block in (0, len(getattr(net, f"layer{stage}")) - 1):
            prefix = f"layer{stage}.{block}.conv2."
            assert state[prefix + "weight"].shape == (planes, planes, 3, 3)
            assert state[prefix + "conv_offset.weight"].shape == (27, planes, 3, 3)
            assert state[prefix + "conv_offset.bias"].shape == (27,)
            assert prefix + "bias" not in state
    assert not any("conv_offset" in k for k in state if k.startswith(("layer1.", "layer2.")))
    assert isinstance(net.layer2[0].conv2, torch.nn.Conv2d)
    # caffe: the stride sits on the first 1x1 conv
    for stage in (2, 3, 4):
        block = getattr(net, f"layer{stage}")[0]
        assert tuple(block.conv1.stride) == (2, 2) and tuple(block.conv2.stride) == (1, 1)
    assert not any(p.requires_grad for p in net.layer1.parameters())
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]


def test_pytorch_and_caffe_style_differ_only_in_stride_placement():
    torch.manual_seed(0)
    pytorch = ResNet(depth=50, out_indices=(3,)).eval()
    caffe = ResNet(depth=50, out_indices=(3,), style="caffe").eval()
    caffe.load_state_dict(pytorch.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = pytorch(x)[0], caffe(x)[0]
    assert a.shape == b.shape == (1, 2048, 2, 2)
    assert not torch.allclose(a, b)
    assert tuple(pytorch.layer3[0].conv2.stride) == (2, 2) and tuple(caffe.layer3[0].conv1.stride) == (2, 2)


def test_resnet18_with_dcn_in_one_stage():
    net = ResNet(depth=18, out_indices=(1, 2, 3), dcn=dict(deform_groups=1), stage_with_dcn=(False, False, False, True))
    assert isinstance(net.layer4[0].conv2, ModulatedDeformConv2d)
    assert isinstance(net.layer3[1].conv2, torch.nn.Conv2d)
    outs = net(torch.randn(2, 3, 32, 88))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 4, 11), (2, 256, 2, 6), (2, 512, 1, 3)]
    sum(o.sum() for o in outs).backward()
    assert net.layer4[0].conv2.conv_offset.weight.grad.abs().sum() > 0


def test_caffe_input_feeds_the_stem_bgr_pixels_minus_caffe_mean():
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (1, 3, 8, 8)).float()   # RGB, 0..255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (pixels / 255 - mean) / std                 # what ImageNormalize gives
    expected = pixels[:, [2, 1, 0]] - torch.tensor([103.530, 116.280, 123.675]).view(1, 3, 1, 1)
    net = ResNet(depth=18, caffe_input=True).eval()
    seen = []
    net.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    net(normalised)
    torch.testing.assert_close(seen[0], expected, atol=1e-3, rtol=0)
    assert not any("input_" in k for k in net.state_dict())   # not a checkpoint tensor


def test_bad_dcn_options_are_clear_errors():
    with pytest.raises(ValueError, match="stage_with_dcn is set but dcn is null"):
        ResNet(depth=18, stage_with_dcn=(False, False, True, True))
    with pytest.raises(ValueError, match="unknown dcn keys"):
        ResNet(depth=18, dcn=dict(groups=2), stage_with_dcn=(False, False, False, True))
    with pytest.raises(ValueError, match="style must be one of"):
        ResNet(depth=18, style="tf")
    with pytest.raises(ValueError, match="4 entries"):
        ResNet(depth=18, dcn={}, stage_with_dcn=(True,))
