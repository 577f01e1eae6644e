"""The loader of ``bevformer_r101_dcn_24ep.pth``-layout weights (VARIANTS.md B.4) on a state dict written in that
layout: direct copies, the BEV queries and row/column embeddings resampled 200 -> 180, the CAN-bus MLP folded in,
the decoder side skipped and reported in one line."""
import pytest
import torch
from torch import nn

import mmdet3d.models.bevformer.checkpoint as checkpoint
from mmdet3d.models.backbones import ResNet
from mmdet3d.models.bevformer import BEVFormerEncoder, load_bevformer_weights
from mmdet3d.models.necks import FPN
from mmdet3d.registry import MODELS

from helpers.fake_batch import tiny_config

C = 16  # embed dims of the test encoder


def student_encoder():
    torch.manual_seed(0)
    return nn.ModuleDict({
        "backbone": ResNet(depth=18, out_indices=(1, 2, 3), dcn=dict(deform_groups=1),
                           stage_with_dcn=(False, False, False, True)),
        "neck": FPN([128, 256, 512], C, num_outs=4, add_extra_convs="on_output", relu_before_extra_convs=True),
        "vtransform": BEVFormerEncoder(embed_dims=C, out_channels=8, bev_h=180, bev_w=180, num_layers=2, num_heads=4,
                                       sca_points=4, ffn_dims=32)})


def released_layout(encoder, rows=200):
    """A random state dict in BEVFormer's layout for ``encoder``'s architecture, on a ``rows`` x ``rows`` grid, with
    the decoder-side keys the student has no use for."""
    g = torch.Generator().manual_seed(1)
    c = encoder["vtransform"].embed_dims

    def rand(t):
        return torch.randn(t.shape, generator=g) if t.is_floating_point() else t.clone()

    state = {f"img_backbone.{k}": rand(v) for k, v in encoder["backbone"].state_dict().items()}
    state.update({f"img_neck.{k}": rand(v) for k, v in encoder["neck"].state_dict().items()})
    head = "pts_bbox_head."
    for k, v in encoder["vtransform"].state_dict().items():
        if k.startswith("layers."):
            state[f"{head}transformer.encoder.{k}"] = rand(v)
        elif k in ("level_embeds", "cams_embeds"):
            state[f"{head}transformer.{k}"] = rand(v)
    # A BEV query field linear in the cell centres (rows = y, columns = x), so resampling has an exact answer.
    centres = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    slopes = torch.linspace(-1, 1, c)
    state[head + "bev_embedding.weight"] = (2 * y[..., None] + 3 * x[..., None] * slopes).flatten(0, 1)
    state[head + "positional_encoding.row_embed.weight"] = 5 * centres[:, None].repeat(1, c // 2)
    state[head + "positional_encoding.col_embed.weight"] = -7 * centres[:, None].repeat(1, c // 2)
    can_bus = nn.Sequential(nn.Linear(18, c // 2), nn.ReLU(True), nn.Linear(c // 2, c), nn.ReLU(True))
    can_bus.add_module("norm", nn.LayerNorm(c))
    for p in can_bus.parameters():
        nn.init.normal_(p, generator=g)
    state.update({f"{head}transformer.can_bus_mlp.{k}": v for k, v in can_bus.state_dict().items()})
    skipped = {head + "query_embedding.weight": torch.zeros(900, 2 * c), head + "code_weights": torch.ones(10),
               head + "transformer.reference_points.weight": torch.zeros(3, c),
               head + "cls_branches.0.0.weight": torch.zeros(c, c),
               head + "reg_branches.5.4.weight": torch.zeros(10, c),
               head + "transformer.decoder.layers.0.attentions.0.attn.in_proj_weight": torch.zeros(3 * c, c),
               head + "transformer.decoder.layers.5.norms.2.bias": torch.zeros(c)}
    state.update(skipped)
    with torch.no_grad():
        folded = can_bus(torch.zeros(18))
    return state, folded, sorted(skipped)


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(checkpoint, "print_log", lambda msg, **kwargs: messages.append(msg))
    return messages


def test_released_names_cover_the_students_parts():
    state, _, _ = released_layout(student_encoder())
    for key in ["img_backbone.conv1.weight", "img_backbone.layer4.0.conv2.conv_offset.weight",
                "img_neck.lateral_convs.2.conv.weight", "img_neck.fpn_convs.3.conv.weight",
                "pts_bbox_head.transformer.encoder.layers.1.attentions.1.deformable_attention.sampling_offsets.weight",
                "pts_bbox_head.transformer.encoder.layers.1.attentions.0.sampling_offsets.weight",
                "pts_bbox_head.transformer.encoder.layers.0.ffns.0.layers.0.0.weight",
                "pts_bbox_head.transformer.encoder.layers.0.norms.2.weight"]:
        assert key in state, key


def test_loading_copies_resamples_folds_and_reports(tmp_path, logged):
    encoder = student_encoder()
    state, folded, skipped = released_layout(encoder)
    path = tmp_path / "bevformer_r101_dcn_24ep.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    report = load_bevformer_weights(encoder, str(path))
    own = encoder.state_dict()
    for key, value in state.items():
        for src, dst in (("img_backbone.", "backbone."), ("img_neck.", "neck."),
                         ("pts_bbox_head.transformer.encoder.", "vtransform.")):
            if key.startswith(src):
                assert torch.equal(own[dst + key[len(src):]], value), key
    assert torch.equal(own["vtransform.level_embeds"], state["pts_bbox_head.transformer.level_embeds"])
    centres = (torch.arange(180, dtype=torch.float32) + 0.5) / 180
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    want = (2 * y[..., None] + 3 * x[..., None] * torch.linspace(-1, 1, C)).flatten(0, 1) + folded
    torch.testing.assert_close(own["vtransform.bev_embedding.weight"], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(own["vtransform.positional_encoding.row_embed.weight"],
                               5 * centres[:, None].repeat(1, C // 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(own["vtransform.positional_encoding.col_embed.weight"],
                               -7 * centres[:, None].repeat(1, C // 2), atol=1e-5, rtol=0)
    assert sorted(report["skipped"]) == skipped and report["grid"] == ((200, 200), (180, 180))
    assert len(logged) == 1 and "\n" not in logged[0]
    assert "skipped 7" in logged[0] and "pts_bbox_head.transformer.decoder 2" in logged[0]
    assert "200x200 -> 180x180" in logged[0] and "CAN-bus MLP folded" in logged[0]
    assert "vtransform.bev_proj.0.weight" in logged[0]       # new in the student: keeps its initialisation


def test_wrong_architecture_and_empty_files_are_errors(tmp_path):
    encoder = student_encoder()
    state, _, _ = released_layout(encoder)
    path = tmp_path / "ckpt.pth"
    wrong = dict(state, **{"img_neck.fpn_convs.0.conv.weight": torch.zeros(C, C, 1, 1)})
    torch.save(wrong, path)
    with pytest.raises(ValueError, match=r"1 with another shape \(neck\.fpn_convs\.0\.conv\.weight"):
        load_bevformer_weights(encoder, str(path))
    torch.save(dict(state, **{"img_backbone.layer5.0.conv1.weight": torch.zeros(1)}), path)
    with pytest.raises(ValueError, match=r"1 unexpected \(backbone\.layer5\.0\.conv1\.weight\)"):
        load_bevformer_weights(encoder, str(path))
    torch.save({"encoders.camera.backbone.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="no BEVFormer weights"):
        load_bevformer_weights(encoder, str(path))


def test_simdistill_loads_it_from_the_config(tmp_path, logged):
    cfg = tiny_config("simdistill_bevformer.yaml")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    camera = model.encoders_student.camera
    state, _, _ = released_layout(camera, rows=30)
    path = tmp_path / "bevformer.pth"
    torch.save(state, path)
    loaded = MODELS.build(tiny_config("simdistill_bevformer.yaml", "--model.bevformer_checkpoint", str(path)).model)
    assert torch.equal(loaded.encoders_student.camera.backbone.layer4[0].conv2.conv_offset.weight,
                       state["img_backbone.layer4.0.conv2.conv_offset.weight"])
    assert "30x30 -> 20x20" in logged[0]
    with pytest.raises(ValueError, match="the student has no BEVFormer encoder"):
        MODELS.build(dict(tiny_config("simdistill.yaml").model, bevformer_checkpoint=str(path)))
