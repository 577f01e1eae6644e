"""ViTAEv2-S camera backbone: sizes, parameter count, key names and shapes against VARIANTS.md A.2-A.4, cell details,
drop path, freezing, checkpointing and loading ViTAE's ImageNet checkpoint layout."""
import pytest
import torch

from mmdet3d.models.backbones.vitaev2 import ViTAEv2, drop_path_rates, window_attend
from mmdet3d.registry import MODELS

# VARIANTS.md A.4, one row per stage: PRM conv weight (one per dilation), RC PCM conv weights 0/3/6, RC qkv/proj/fc1
# weights and whether the qkv has a bias, NC count, NC qkv/fc1/fc2 weights, NC PCM conv weights 0/3/6.
A4 = [
    dict(prm=[[64, 3, 7, 7]] * 4, rc_pcm=[[64, 3, 3, 3], [64, 64, 3, 3], [64, 64, 3, 3]],
         rc_qkv=[192, 256], rc_qkv_bias=True, rc_proj=[64, 64], rc_fc=[64, 64],
         nc=2, nc_qkv=[192, 64], nc_fc1=[256, 64], nc_fc2=[64, 256],
         nc_pcm=[[256, 64, 3, 3], [64, 256, 3, 3], [64, 64, 3, 3]], keys=92),
    dict(prm=[[64, 64, 3, 3]] * 3, rc_pcm=[[64, 4, 3, 3], [64, 4, 3, 3], [128, 4, 3, 3]],
         rc_qkv=[384, 192], rc_qkv_bias=True, rc_proj=[128, 128], rc_fc=[128, 128],
         nc=2, nc_qkv=[384, 128], nc_fc1=[512, 128], nc_fc2=[128, 512],
         nc_pcm=[[512, 4, 3, 3], [128, 16, 3, 3], [128, 4, 3, 3]], keys=90),
    dict(prm=[[128, 128, 3, 3]] * 2, rc_pcm=[[128, 4, 3, 3], [128, 4, 3, 3], [256, 4, 3, 3]],
         rc_qkv=[768, 256], rc_qkv_bias=False, rc_proj=[256, 256], rc_fc=[256, 256],
         nc=8, nc_qkv=[768, 256], nc_fc1=[1024, 256], nc_fc2=[256, 1024],
         nc_pcm=[[1024, 4, 3, 3], [256, 16, 3, 3], [256, 4, 3, 3]], keys=255),
    dict(prm=[[256, 256, 3, 3]] * 2, rc_pcm=[[256, 4, 3, 3], [256, 4, 3, 3], [512, 4, 3, 3]],
         rc_qkv=[1536, 512], rc_qkv_bias=False, rc_proj=[512, 512], rc_fc=[512, 512],
         nc=2, nc_qkv=[1536, 512], nc_fc1=[2048, 512], nc_fc2=[512, 2048],
         nc_pcm=[[2048, 4, 3, 3], [512, 16, 3, 3], [512, 4, 3, 3]], keys=87),
]
STAGE_PARAMS = [941_824, 728_384, 7_724_032, 9_448_448]   # A.2
NORM_PARAMS = 1_792
TOTAL_PARAMS = 18_844_480
TOTAL_TENSORS = 530
NUM_BATCHNORMS = 36


def layer(name, weight, bias=True):
    """Conv/Linear ``name``: weight and (by A.4's rule) a bias of the output size."""
    out = {f"{name}.weight": weight}
    if bias:
        out[f"{name}.bias"] = [weight[0]]
    return out


def norm(name, channels):
    return {f"{name}.weight": [channels], f"{name}.bias": [channels]}


def batchnorm(name, channels):
    return {**norm(name, channels), f"{name}.running_mean": [channels], f"{name}.running_var": [channels],
            f"{name}.num_batches_tracked": []}


def conv_branch(prefix, weights):
    out = {}
    for index, weight in zip((0, 3, 6), weights):
        out.update(layer(f"{prefix}.{index}", weight))
        if index < 6:
            out.update(batchnorm(f"{prefix}.{index + 1}", weight[0]))
    return out


def expected_shapes():
    """Every state-dict key of ViTAEv2-S with its shape, written out from VARIANTS.md A.4."""
    shapes = {}
    for i, row in enumerate(A4):
        stage = {}
        rc = f"layers.{i}.RC"
        for d, weight in enumerate(row["prm"]):
            stage.update(layer(f"{rc}.PRM.convs.{d}.0", weight))
        stage.update(conv_branch(f"{rc}.PCM", row["rc_pcm"]))
        stage.update(norm(f"{rc}.attn.norm1", row["rc_qkv"][1]))
        stage.update(layer(f"{rc}.attn.attn.qkv", row["rc_qkv"], bias=row["rc_qkv_bias"]))
        stage.update(layer(f"{rc}.attn.attn.proj", row["rc_proj"]))
        stage.update(norm(f"{rc}.attn.norm2", row["rc_proj"][0]))
        stage.update(layer(f"{rc}.attn.mlp.fc1", row["rc_fc"]))
        stage.update(layer(f"{rc}.attn.mlp.fc2", row["rc_fc"]))
        dims = row["nc_qkv"][1]
        for j in range(row["nc"]):
            nc = f"layers.{i}.NC.{j}"
            stage.update(norm(f"{nc}.norm1", dims))
            stage.update(layer(f"{nc}.attn.qkv", row["nc_qkv"]))
            stage.update(layer(f"{nc}.attn.proj", [dims, dims]))
            stage.update(norm(f"{nc}.norm2", dims))
            stage.update(layer(f"{nc}.mlp.fc1", row["nc_fc1"]))
            stage.update(layer(f"{nc}.mlp.fc2", row["nc_fc2"]))
            stage.update(conv_branch(f"{nc}.PCM", row["nc_pcm"]))
        assert len(stage) == row["keys"], i
        shapes.update(stage)
    for i, channels in ((1, 128), (2, 256), (3, 512)):
        shapes.update(norm(f"norm{i}", channels))
    return shapes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ViTAEv2()


def test_registered_and_every_key_and_shape_as_the_original(model):
    assert type(MODELS.build(dict(type="ViTAEv2", NC_depth=[1, 1, 1, 1]))).__name__ == "ViTAEv2"
    expected = expected_shapes()
    assert len(expected) == TOTAL_TENSORS
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(actual) == sorted(expected)
    assert actual == expected
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == NUM_BATCHNORMS


def test_parameter_count(model):
    assert sum(p.numel() for p in model.parameters()) == TOTAL_PARAMS
    for i, count in enumerate(STAGE_PARAMS):
        assert sum(p.numel() for p in model.layers[i].parameters()) == count, i
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("norm")) == NORM_PARAMS


@pytest.mark.parametrize("size,expected", [((64, 96), [(8, 12), (4, 6), (2, 3)]),
                                           ((37, 53), [(5, 7), (3, 4), (2, 2)])])
def test_any_input_size(model, size, expected):
    """Strides 8/16/32, a side not divisible rounding up (each cell pads its input to its stride)."""
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [(2, c, *hw) for c, hw in zip((128, 256, 512), expected)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.slow
def test_paper_size_outputs(model):
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(6, 3, 256, 704))   # one sample, six cameras
    assert [tuple(o.shape) for o in outs] == [(6, 128, 32, 88), (6, 256, 16, 44), (6, 512, 8, 22)]


def test_outputs_are_layernormed(model):
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    for out in outs:   # norm{i} at its initial 1/0: zero mean, unit variance over the channels of every pixel
        assert torch.allclose(out.mean(1), torch.zeros(()), atol=1e-4)
        assert torch.allclose(out.var(1, unbiased=False), torch.ones(()), atol=1e-2)


def test_window_padding_is_centred():
    """A 9 x 8 map with 7 x 7 windows pads 2 rows on top and 3 below, 3 columns either side (VARIANTS.md A.3);
    an attention that averages its window then sees 5 x 4 real tokens in the top windows, 4 x 4 in the bottom."""
    ones = torch.ones(1, 9 * 8, 1)
    out = window_attend(lambda windows: windows.mean(1, keepdim=True).expand_as(windows), ones, (9, 8), 7)
    out = out.view(9, 8)
    assert torch.allclose(out[:5], torch.full((5, 8), 20 / 49))
    assert torch.allclose(out[5:], torch.full((4, 8), 16 / 49))


def test_prm_concatenates_dilation_major():
    torch.manual_seed(0)
    prm = ViTAEv2().layers[0].RC.PRM
    for d, conv in enumerate(prm.convs):
        torch.nn.init.zeros_(conv[0].weight)
        torch.nn.init.constant_(conv[0].bias, d + 1.0)
    tokens, hw = prm(torch.randn(1, 3, 28, 28))
    assert hw == (7, 7) and tokens.shape == (1, 49, 256)
    gelu = torch.nn.functional.gelu
    for d in range(4):
        assert torch.allclose(tokens[..., 64 * d:64 * (d + 1)], gelu(torch.tensor(d + 1.0)))


def test_drop_path_schedule():
    rates = torch.linspace(0, 0.2, 14).tolist()
    intended = drop_path_rates([2, 2, 8, 2], 0.2)
    assert intended == [rates[0:2], rates[2:4], rates[4:12], rates[12:14]] and intended[3][-1] == pytest.approx(0.2)
    official = drop_path_rates([2, 2, 8, 2], 0.2, official=True)   # the released values, VARIANTS.md A.3
    listed = [[0, .0154], [.0308, .0462], [.0308, .0462, .0615, .0769, .0923, .1077, .1231, .1385], [.1231, .1385]]
    for got, want in zip(official, listed):
        assert got == pytest.approx(want, abs=1e-4)
    cells = [cell.drop_path.prob for stage in ViTAEv2(official_drop_path=True).layers for cell in stage.NC]
    assert cells == [r for stage in official for r in stage]
    cells = [cell.drop_path.prob for stage in ViTAEv2().layers for cell in stage.NC]
    assert cells == rates


def test_frozen_stages():
    torch.manual_seed(0)
    model = ViTAEv2(frozen_stages=2).train()
    for i, stage in enumerate(model.layers):
        assert all(p.requires_grad == (i >= 2) for p in stage.parameters()), i
        assert all(m.training == (i >= 2) for m in stage.modules()), i
    stats = model.layers[1].NC[0].PCM[1].running_mean.clone()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert torch.equal(model.layers[1].NC[0].PCM[1].running_mean, stats)
    assert all(p.grad is None for p in model.layers[:2].parameters())
    assert model.layers[2].RC.PRM.convs[0][0].weight.grad is not None
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("norm"))
    assert all(p.requires_grad for p in ViTAEv2(frozen_stages=0).parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        ViTAEv2(frozen_stages=5)


def test_checkpointing_gives_the_same_outputs_and_gradients():
    grads, outs = [], []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = ViTAEv2(use_checkpoint=use_checkpoint, drop_path_rate=0.0).train()
        x = torch.randn(2, 3, 32, 64, requires_grad=True)
        out = model(x)
        sum(o.square().mean() for o in out).backward()
        outs.append([o.detach() for o in out])
        grads.append([x.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(outs[0], outs[1]):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------------------- pretrained
def imagenet_state(seed):
    """A state dict in the layout of ViTAE's ImageNet-1k ViTAEv2-S: the A.4 ``layers.*`` tensors, the classifier, and
    a ``relative_position_index`` buffer in each window attention (stages 0-1); no output norms."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in expected_shapes().items():
        if key.startswith("norm"):
            continue
        state[key] = (torch.tensor(7) if key.endswith("num_batches_tracked") else
                      torch.rand(shape, generator=generator) + 0.5)
    state["head.weight"], state["head.bias"] = torch.randn(1000, 512, generator=generator), torch.zeros(1000)
    for i in (0, 1):
        for attn in [f"layers.{i}.RC.attn.attn"] + [f"layers.{i}.NC.{j}.attn" for j in range(2)]:
            state[f"{attn}.relative_position_index"] = torch.randint(0, 169, (49, 49))
    return state


def assert_loaded(model, state):
    own = model.state_dict()
    assert not any(k.endswith("relative_position_index") for k in own)
    for key, value in state.items():
        if key.startswith("layers.") and not key.endswith("relative_position_index"):
            assert torch.equal(own[key], value), key
    for i in (1, 2, 3):
        assert torch.equal(own[f"norm{i}.weight"], torch.ones_like(own[f"norm{i}.weight"]))
        assert torch.equal(own[f"norm{i}.bias"], torch.zeros_like(own[f"norm{i}.bias"]))


def assert_one_line_report(messages, path):
    assert len(messages) == 1
    message = messages[0]
    assert "\n" not in message and str(path) in message
    assert "6 missing (norm1.weight, norm1.bias, norm2.weight, ... (+3))" in message
    assert "unexpected" not in message   # head.* and relative_position_index are dropped, not reported


@pytest.mark.parametrize("load_ema", [True, False])
def test_imagenet_checkpoint_loads_ema_weights(tmp_path, warnings_logged, load_ema):
    raw, ema = imagenet_state(1), imagenet_state(2)
    path = tmp_path / "ViTAEv2-S.pth.tar"
    torch.save({"epoch": 300, "state_dict": {f"module.{k}": v for k, v in raw.items()}, "state_dict_ema": ema}, path)
    init_cfg = dict(type="Pretrained", checkpoint=str(path))
    model = MODELS.build(dict(type="ViTAEv2", load_ema=load_ema, init_cfg=init_cfg))
    assert_loaded(model, ema if load_ema else raw)
    assert_one_line_report(warnings_logged, path)


def test_checkpoint_without_ema_and_detector_layout(tmp_path, warnings_logged):
    raw = imagenet_state(3)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": raw}, plain)
    assert_loaded(ViTAEv2(pretrained=str(plain)), raw)
    detector = tmp_path / "detector.pth"
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in raw.items()},
                               "neck.fpn_convs.0.conv.weight": torch.zeros(4, 4, 3, 3)}}, detector)
    assert_loaded(ViTAEv2(init_cfg=dict(type="Pretrained", checkpoint=str(detector))), raw)
    assert len(warnings_logged) == 2 and all("6 missing" in m for m in warnings_logged)


def test_stage_weights_load_strictly(tmp_path):
    state = imagenet_state(4)
    del state["layers.2.NC.7.mlp.fc2.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        ViTAEv2(pretrained=str(path))
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "layers.2.NC.7.mlp.fc2.weight" in message
    assert message.startswith("ViTAEv2(token_dims=[64, 128, 256, 512], NC_depth=[2, 2, 8, 2])")

    state = imagenet_state(4)
    state["layers.3.NC.2.norm1.weight"] = torch.ones(512)   # a deeper model's cell
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 unexpected \(layers\.3\.NC\.2\.norm1\.weight\)"):
        ViTAEv2(pretrained=str(path))

    state = imagenet_state(4)
    state["layers.0.RC.attn.mlp.fc1.weight"] = torch.ones(96, 64)
    torch.save(state, path)
    with pytest.raises(ValueError, match="another size or architecture"):
        ViTAEv2(pretrained=str(path))
