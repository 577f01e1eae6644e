"""mmdet's FPN (``necks/fpn.py``): BEVFormer's 4-level layout and key shapes (VARIANTS.md B.3/B.4), the top-down sum
and the extra level against hand computation."""
import pytest
import torch

from mmdet3d.models.necks import FPN


def test_bevformer_layout_shapes_and_keys():
    neck = FPN([512, 1024, 2048], 256, num_outs=4, add_extra_convs="on_output", relu_before_extra_convs=True)
    state = neck.state_dict()
    for i, c in enumerate([512, 1024, 2048]):
        assert state[f"lateral_convs.{i}.conv.weight"].shape == (256, c, 1, 1)
        assert state[f"lateral_convs.{i}.conv.bias"].shape == (256,)
    for i in range(4):
        assert state[f"fpn_convs.{i}.conv.weight"].shape == (256, 256, 3, 3)
    assert len(state) == 14
    outs = neck([torch.randn(1, 512, 32, 88), torch.randn(1, 1024, 16, 44), torch.randn(1, 2048, 8, 22)])
    assert [tuple(o.shape) for o in outs] == [(1, 256, 32, 88), (1, 256, 16, 44), (1, 256, 8, 22), (1, 256, 4, 11)]


def identity_fpn(extra, relu):
    """2 channels everywhere; lateral convs = identity, output convs = centre tap identity."""
    neck = FPN([2, 2, 2], 2, num_outs=5, add_extra_convs=extra, relu_before_extra_convs=relu)
    with torch.no_grad():
        for conv in neck.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.zero_()
                conv.bias.zero_()
                centre = conv.weight.shape[-1] // 2
                conv.weight[:, :, centre, centre] = torch.eye(2)
    return neck


def test_top_down_sum_and_extra_levels_by_hand():
    torch.manual_seed(0)
    c3, c4, c5 = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    outs = identity_fpn("on_output", True)([c3, c4, c5])

    def up(x):  # nearest x2
        return x.repeat_interleave(2, 2).repeat_interleave(2, 3)

    p5 = c5
    p4 = c4 + up(p5)
    p3 = c3 + up(p4)
    p6 = p5[:, :, ::2, ::2]                  # stride 2, padding 1, centre tap: the first extra level has no ReLU
    p7 = p6.clamp(min=0)[:, :, ::2, ::2]     # the second one reads ReLU(P6)
    for got, want in zip(outs, [p3, p4, p5, p6, p7], strict=True):
        torch.testing.assert_close(got, want)
    assert (p6 < 0).any()


def test_extra_levels_without_convs_are_strided_subsampling():
    torch.manual_seed(0)
    neck = identity_fpn(False, False)
    c5 = torch.randn(1, 2, 4, 4)
    outs = neck([torch.randn(1, 2, 16, 16), torch.randn(1, 2, 8, 8), c5])
    torch.testing.assert_close(outs[3], c5[:, :, ::2, ::2])
    assert tuple(outs[4].shape) == (1, 2, 1, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_outs"):
        FPN([2, 2], 2, num_outs=1)
    with pytest.raises(ValueError, match="add_extra_convs"):
        FPN([2, 2], 2, num_outs=3, add_extra_convs="on_top")
    with pytest.raises(ValueError, match="expected 2 input levels"):
        FPN([2, 2], 2, num_outs=2)([torch.zeros(1, 2, 4, 4)])
