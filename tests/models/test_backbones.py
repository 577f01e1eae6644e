import pytest
import torch
import torchvision
from torch import nn

from mmdet3d.models.backbones import GeneralizedResNet, ResNet, SwinTransformer
from mmdet3d.models.backbones.swin import (PatchMerging, ShiftWindowMSA, convert_official_swin,
                                           relative_position_index)
from mmdet3d.registry import MODELS


def small_swin(**kwargs):
    cfg = dict(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 4), window_size=7, out_indices=(1, 2, 3),
               drop_path_rate=0.2)
    cfg.update(kwargs)
    return SwinTransformer(**cfg)


@pytest.mark.parametrize("size", [(256, 704), (128, 352), (96, 256), (37, 51)])
def test_swin_tiny_output_shapes(size):
    model = MODELS.build(dict(type="SwinTransformer", embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                              window_size=7, mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.0,
                              attn_drop_rate=0.0, drop_path_rate=0.2, patch_norm=True, out_indices=[1, 2, 3],
                              with_cp=False, convert_weights=True)).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    sizes = [(h, w)]
    for _ in range(4):  # every stride-2 step (and the stride-4 patch embedding) rounds up
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    expected = [(1, 192, *sizes[3]), (1, 384, *sizes[4]), (1, 768, -(-sizes[4][0] // 2), -(-sizes[4][1] // 2))]
    assert [tuple(o.shape) for o in outs] == expected
    if size == (256, 704):
        assert expected == [(1, 192, 32, 88), (1, 384, 16, 44), (1, 768, 8, 22)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_swin_tiny_key_names_match_mmdet():
    keys = set(SwinTransformer(out_indices=(1, 2, 3)).state_dict())
    for key in ["patch_embed.projection.weight", "patch_embed.norm.bias",
                "stages.0.blocks.0.attn.w_msa.relative_position_bias_table",
                "stages.0.blocks.1.attn.w_msa.relative_position_index", "stages.2.blocks.5.attn.w_msa.qkv.weight",
                "stages.2.blocks.5.attn.w_msa.proj.bias", "stages.3.blocks.1.ffn.layers.0.0.weight",
                "stages.3.blocks.1.ffn.layers.1.bias", "stages.1.blocks.0.norm2.weight",
                "stages.0.downsample.reduction.weight", "stages.2.downsample.norm.weight", "norm1.weight",
                "norm3.bias"]:
        assert key in keys, key
    assert "norm0.weight" not in keys and "stages.3.downsample.reduction.weight" not in keys
    # 4 embed + 12 blocks x 14 + 3 merges x 3 + 3 output norms x 2, as mmdet's Swin-T
    assert len(keys) == 187
    table = SwinTransformer().state_dict()["stages.2.blocks.0.attn.w_msa.relative_position_bias_table"]
    assert table.shape == (169, 12)


def test_relative_position_index_by_hand():
    # window 2: tokens (0,0),(0,1),(1,0),(1,1); index = (dr + 1) * 3 + (dc + 1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)


@pytest.mark.parametrize("shift", [False, True])
def test_window_attention_only_mixes_tokens_of_one_window(shift):
    torch.manual_seed(0)
    h, w, ws = 7, 8, 3
    attn = ShiftWindowMSA(4, 2, ws, shift, True, None, 0.0, 0.0, 0.0).eval()
    x = torch.randn(1, h * w, 4)
    base = attn(x, (h, w))
    offset = ws // 2 if shift else 0

    def group(i):  # windows start at `offset` (+k*ws); tokens rolled round the border form their own windows
        return (i - offset) // ws

    for src in [(0, 0), (3, 4), (6, 7), (2, 1), (5, 0)]:
        y = x.clone()
        y[0, src[0] * w + src[1]] += 1.0
        changed = ((attn(y, (h, w)) - base).abs().amax(-1) > 1e-6).view(h, w)
        expected = torch.tensor([[group(r) == group(src[0]) and group(c) == group(src[1]) for c in range(w)]
                                 for r in range(h)])
        assert torch.equal(changed, expected), src


def test_patch_merging_and_official_weight_conversion():
    torch.manual_seed(0)
    c, h, w = 5, 4, 6
    merge = PatchMerging(c, 2 * c)
    x = torch.randn(2, c, h, w)
    # the original Swin concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]
    official = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
    official = official.flatten(2).transpose(1, 2)
    norm, reduction = nn.LayerNorm(4 * c), nn.Linear(4 * c, 2 * c, bias=False)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    expected = reduction(norm(official))
    state = {"layers.0.downsample.norm.weight": norm.weight, "layers.0.downsample.norm.bias": norm.bias,
             "layers.0.downsample.reduction.weight": reduction.weight}
    converted = convert_official_swin(state)
    merge.load_state_dict({k[len("stages.0.downsample."):]: v for k, v in converted.items()})
    out, hw = merge(x.flatten(2).transpose(1, 2), (h, w))
    assert hw == (2, 3)
    torch.testing.assert_close(out, expected)


def test_official_swin_key_renames():
    v = torch.zeros(1)
    out = convert_official_swin({"patch_embed.proj.weight": v, "layers.1.blocks.0.attn.qkv.weight": v,
                                 "layers.1.blocks.0.mlp.fc1.bias": v, "layers.1.blocks.0.mlp.fc2.weight": v,
                                 "head.weight": v, "norm1.weight": v})
    assert set(out) == {"patch_embed.projection.weight", "stages.1.blocks.0.attn.w_msa.qkv.weight",
                        "stages.1.blocks.0.ffn.layers.0.0.bias", "stages.1.blocks.0.ffn.layers.1.weight",
                        "norm1.weight"}


def test_swin_drop_path_rates_and_stochastic_training():
    model = small_swin()
    rates = [b.ffn.dropout_layer.prob for s in model.stages for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 8).tolist())
    assert [b.attn.drop.prob for s in model.stages for b in s.blocks] == rates
    model = small_swin(drop_path_rate=0.9)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(1)
    a = model(x)[-1]
    torch.manual_seed(2)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_swin_with_cp_matches_and_backpropagates():
    torch.manual_seed(0)
    plain = small_swin(drop_path_rate=0.0)
    cp = small_swin(drop_path_rate=0.0, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96, requires_grad=True)
    torch.testing.assert_close(cp(x)[2], plain(x)[2])
    cp(x)[2].sum().backward()
    assert cp.patch_embed.projection.weight.grad is not None


def test_swin_pretrained_from_detector_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = small_swin().eval()
    path = tmp_path / "det.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": {**{f"backbone.{k}": v for k, v in src.state_dict().items()},
                                                     "neck.x": torch.zeros(1)}}, path)
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(small_swin().eval()(x)[0], src(x)[0])
    # loaded at construction: a detector's recursive init never reaches a backbone inside its ModuleDicts
    dst = small_swin(init_cfg=dict(type="Pretrained", checkpoint=str(path))).eval()
    torch.testing.assert_close(dst(x)[0], src(x)[0])


def test_backbone_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        small_swin(pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="local file"):
        ResNet(depth=18, init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18"))
    other = tmp_path / "swin.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in small_swin().state_dict().items()}}, other)
    with pytest.raises(ValueError, match=r"swin.pth holds no weights of this backbone"):
        ResNet(depth=18, pretrained=str(other))
    with pytest.raises(ValueError, match="init_cfg"):
        small_swin(init_cfg=dict(type="Kaiming"))


def test_resnet50_stages_and_pretrained(tmp_path):
    model = MODELS.build(dict(type="ResNet", depth=50, out_indices=[1, 2, 3])).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 256, 704))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 32, 88), (1, 1024, 16, 44), (1, 2048, 8, 22)]

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = ResNet(depth=18, out_indices=(0, 3), pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
    c2 = reference.layer1(stem)
    c5 = reference.layer4(reference.layer3(reference.layer2(c2)))
    outs = model(x)
    torch.testing.assert_close(outs[0], c2)
    torch.testing.assert_close(outs[1], c5)


def test_resnet_frozen_stages_and_norm_eval():
    model = ResNet(depth=18, frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.layer2.training


def _generalized_resnet_reference(model, x):
    """The same stages rebuilt from torchvision's BasicBlock with the model's weights."""
    outs = []
    for stage in model:
        blocks = []
        for block in stage:
            in_c, out_c = block.conv1.in_channels, block.conv1.out_channels
            ref = torchvision.models.resnet.BasicBlock(in_c, out_c, stride=block.conv1.stride[0],
                                                       downsample=block.downsample)
            ref.load_state_dict(block.state_dict())
            blocks.append(ref)
        x = nn.Sequential(*blocks).eval()(x)
        outs.append(x)
    return outs


def test_generalized_resnet_small_matches_torchvision_blocks():
    torch.manual_seed(0)
    model = MODELS.build(dict(type="GeneralizedResNet", in_channels=16, blocks=[[2, 8, 2], [2, 16, 2], [2, 32, 1]]))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.running_mean)
    model.eval()
    x = torch.randn(2, 16, 24, 20)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 12, 10), (2, 16, 6, 5), (2, 32, 6, 5)]
    for a, b in zip(outs, _generalized_resnet_reference(model, x)):
        torch.testing.assert_close(a, b)
    keys = set(model.state_dict())
    assert {"0.0.conv1.weight", "0.0.downsample.0.weight", "0.0.downsample.1.running_var", "2.1.bn2.bias"} <= keys
    assert "0.1.downsample.0.weight" not in keys


def test_generalized_resnet_paper_config_shapes():
    model = GeneralizedResNet(256, [[2, 128, 2], [2, 256, 2], [2, 512, 1]]).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 256, 180, 180))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 90, 90), (1, 256, 45, 45), (1, 512, 45, 45)]


# ------------------------------------------------------------------- pretrained Swin: report or one-line error
@pytest.fixture
def logged(monkeypatch):
    import mmdet3d.models.backbones.pretrained as pretrained
    messages = []
    monkeypatch.setattr(pretrained, "print_log", lambda msg, **kwargs: messages.append(msg))
    return messages


def _save_swin(path, ckpt_layout="mmdet", **kwargs):
    state = small_swin(**kwargs).state_dict()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}} if ckpt_layout == "mmdet" else state,
               path)
    return path


def _one_line_error(path, expected, **kwargs):
    with pytest.raises(ValueError) as error:
        small_swin(convert_weights=True, init_cfg=dict(type="Pretrained", checkpoint=str(path)), **kwargs)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and expected in message, message
    assert message.startswith("SwinTransformer(embed_dims=24, depths=[2, 2, 2, 2]"), message
    return message


def test_swin_checkpoint_of_another_network_or_size_is_a_one_line_error(tmp_path):
    resnet = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in
                               torchvision.models.resnet18(weights=None).state_dict().items()}}, resnet)
    _one_line_error(resnet, "holds no weights of this backbone")
    # Swin-S-like (a deeper stage): extra blocks; a shallower one: missing blocks
    deeper = _save_swin(tmp_path / "deeper.pth", depths=(2, 2, 4, 2))
    message = _one_line_error(deeper, "another architecture or depth")
    assert "unexpected (stages.2.blocks.2." in message
    shallower = _save_swin(tmp_path / "shallower.pth", depths=(2, 2, 1, 2))
    assert "missing (stages.2.blocks.1." in _one_line_error(shallower, "another architecture or depth")
    # Swin-B-like (wider) and another window: tensors of another shape
    wider = _save_swin(tmp_path / "wider.pth", embed_dims=32)
    assert "patch_embed.projection.weight: checkpoint [32, 3, 4, 4] vs model [24, 3, 4, 4]" in _one_line_error(
        wider, "another size or architecture")
    window = _save_swin(tmp_path / "window5.pth", window_size=5)
    assert "relative_position_bias_table: checkpoint [81, 1] vs model [169, 1]" in _one_line_error(
        window, "another size or architecture")


def test_unreadable_pretrained_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 20)
    _one_line_error(garbage, "not a readable checkpoint")
    no_weights = tmp_path / "meta_only.pth"
    torch.save({"meta": {"epoch": 3}, "optimizer": {"lr": 0.1}}, no_weights)
    _one_line_error(no_weights, "holds no state dict of tensors")
    import numpy as np
    pickled = tmp_path / "numpy_meta.pth"
    torch.save({"state_dict": small_swin().state_dict(), "meta": {"score": np.float64(0.5)}}, pickled)
    _one_line_error(pickled, "--unsafe-load")


def test_swin_missing_and_unexpected_keys_are_reported_in_one_line(tmp_path, logged):
    """A classification Swin (no output norms; ``norm``, ``head``) and mmdet's ``norm0``: loaded, reported."""
    torch.manual_seed(0)
    src = small_swin()
    state = {k: v for k, v in src.state_dict().items() if not k.startswith(("norm1.", "norm2.", "norm3."))}
    state.update({"norm.weight": torch.ones(192), "norm.bias": torch.zeros(192), "head.weight": torch.zeros(10, 192),
                  "norm0.weight": torch.ones(24), "norm0.bias": torch.zeros(24)})
    path = tmp_path / "classification.pth"
    torch.save({"model": state}, path)
    model = small_swin(convert_weights=True, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    for key, value in src.state_dict().items():
        if not key.startswith(("norm1.", "norm2.", "norm3.")):
            assert torch.equal(model.state_dict()[key], value), key
    (message,) = logged
    assert "\n" not in message and str(path) in message
    assert "6 missing (norm1.weight, norm1.bias, norm2.weight, ... (+3))" in message
    assert "4 unexpected (norm.weight, norm.bias, norm0.weight, ... (+1))" in message   # head.* dropped by the converter
