import importlib.util
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mmdet3d.apis.checkpoint import CheckpointError
from mmdet3d.core.boxes import legacy_to_boxes
from mmdet3d.models.fusion_models.gcm import BEVDeformableAttention
from mmdet3d.ops.spconv import SparseConv3d, SparseConvTensor, SubMConv3d
from mmdet3d.registry import MODELS
from mmdet3d.utils.checkpoint_convert import (HEIGHT_NOTE, build_target_model, convert_checkpoint,
                                              convert_state_dict, legacy_box_rows_to_ours, load_official_checkpoint,
                                              sparse_kernel_v1_to_v2)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "tools", "convert_checkpoint.py")
LIDAR_CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "lidar.yaml")


def load_cli():
    spec = importlib.util.spec_from_file_location("convert_checkpoint_cli", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = load_cli()


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------------------------------- box-code identities
def test_legacy_rot_and_dim_identities():
    yaw = torch.rand(50, dtype=torch.float64) * 4 * math.pi - 2 * math.pi
    a = -yaw - math.pi / 2   # legacy heading
    torch.testing.assert_close(torch.sin(yaw), -torch.cos(a))
    torch.testing.assert_close(torch.cos(yaw), -torch.sin(a))
    # rows of a legacy rot output (sin a, cos a) map to (sin yaw, cos yaw)
    ours = legacy_box_rows_to_ours(torch.stack([torch.sin(a), torch.cos(a)]), "rot")
    torch.testing.assert_close(ours, torch.stack([torch.sin(yaw), torch.cos(yaw)]))
    l, w, h = torch.rand(3, 50, dtype=torch.float64) * 5 + 0.2
    ours = legacy_box_rows_to_ours(torch.stack([w.log(), l.log(), h.log()]), "dim")
    torch.testing.assert_close(ours, torch.stack([l.log(), w.log(), h.log()]))
    with pytest.raises(ValueError, match="3 output rows"):
        legacy_box_rows_to_ours(torch.zeros(2, 4), "dim")


# ------------------------------------------------------------------------------------------------------ CenterHead
HEAD_YAML = """
type: CenterHead
in_channels: 8
tasks: [[car], [truck, pedestrian]]
common_heads: {reg: [2,2], height: [1,2], dim: [3,2], rot: [2,2], vel: [2,2]}
share_conv_channel: 32
separate_head: {type: SeparateHead, init_bias: -2.19, final_kernel: 3, head_conv: 32}
bbox_coder: {type: CenterPointBBoxCoder, pc_range: [-8,-8,-5,8,8,3], out_size_factor: 2, voxel_size: [0.5,0.5],
             max_num: 1000}
"""


def build_head():
    return MODELS.build(yaml.safe_load(HEAD_YAML)).eval()


def legacy_decode(pred, coder):
    """Every (class, cell) of one task decoded with BEVFusion's legacy semantics, in our convention, by score."""
    cell_x, cell_y = coder.cell_size
    p = {k: v[0].double().numpy() for k, v in pred.items()}
    num_cls, size_x, size_y = p["heatmap"].shape
    i, j = np.meshgrid(np.arange(size_x), np.arange(size_y), indexing="ij")
    x = (i + p["reg"][0]) * cell_x + coder.pc_range[0]
    y = (j + p["reg"][1]) * cell_y + coder.pc_range[1]
    w, l, h = np.exp(p["dim"])   # legacy size channels are (w, l, h)
    a = np.arctan2(p["rot"][0], p["rot"][1])
    legacy = np.stack([x, y, p["height"][0], w, l, h, a], -1).reshape(-1, 7)
    boxes = legacy_to_boxes(legacy, velocity=p["vel"].reshape(2, -1).T)
    scores = 1 / (1 + np.exp(-p["heatmap"].reshape(num_cls, -1)))
    all_boxes = np.concatenate([boxes] * num_cls)
    all_scores = scores.reshape(-1)
    labels = np.repeat(np.arange(num_cls), size_x * size_y)
    order = np.argsort(-all_scores, kind="stable")
    return all_boxes[order], all_scores[order], labels[order]


@pytest.mark.parametrize("prefix", ["heads.object.", "heads_student.object."])
def test_converted_head_decodes_like_the_legacy_head(prefix):
    torch.manual_seed(0)
    legacy_head = build_head()
    with torch.no_grad():   # a random network, read with the legacy box semantics
        for param in legacy_head.parameters():
            param.normal_(0.0, 0.15)
    official = {prefix + k: v for k, v in legacy_head.state_dict().items()}
    converted, report = convert_state_dict(official)
    assert len(report.box_layers) == 2 * 2 * 2   # (dim, rot) x (weight, bias) x 2 tasks
    head = build_head()
    head.load_state_dict({k[len(prefix):]: v for k, v in converted.items()})

    feats = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        legacy_preds, preds = legacy_head(feats), head(feats)
    for legacy_pred, pred in zip(legacy_preds, preds):
        want_boxes, want_scores, want_labels = legacy_decode(legacy_pred, head.bbox_coder)
        rot = pred["rot"]
        (det,) = head.bbox_coder.decode(pred["heatmap"].sigmoid(), rot[:, :1], rot[:, 1:], pred["height"],
                                        pred["dim"], pred["vel"], pred["reg"])
        got = det["bboxes"].double().numpy()
        assert got.shape == want_boxes.shape == (pred["heatmap"].shape[1] * 256, 9)
        np.testing.assert_allclose(det["scores"].numpy(), want_scores, rtol=1e-5)
        np.testing.assert_array_equal(det["labels"].numpy(), want_labels)
        cols = [0, 1, 2, 3, 4, 5, 7, 8]   # x y z l w h vx vy
        np.testing.assert_allclose(got[:, cols], want_boxes[:, cols], atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(np.angle(np.exp(1j * (got[:, 6] - want_boxes[:, 6]))), 0, atol=1e-4)
        # the check has teeth: the conversion did change the size and heading outputs
        assert not torch.allclose(legacy_pred["dim"], pred["dim"])
        assert not torch.allclose(legacy_pred["rot"], pred["rot"])


def test_only_the_last_dim_and_rot_layers_change():
    torch.manual_seed(1)
    head = build_head()
    official = {"heads.object." + k: torch.randn_like(v) if v.is_floating_point() else v
                for k, v in head.state_dict().items()}
    converted, report = convert_state_dict(official)
    changed = sorted(k for k in official if not torch.equal(official[k], converted[k]))
    assert changed == sorted(report.box_layers) == sorted(
        f"heads.object.task_heads.{t}.{name}.1.{p}" for t in (0, 1) for name in ("dim", "rot")
        for p in ("weight", "bias"))


# ----------------------------------------------------------------------------------------------------- spconv
def sparse_input(shape, channels, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=g) < 0.3
    indices = mask.nonzero().int()
    features = torch.randn(len(indices), channels, generator=g)
    dense = torch.zeros(1, channels, *shape)
    dense[0, :, indices[:, 0].long(), indices[:, 1].long(), indices[:, 2].long()] = features.T
    batch = torch.zeros(len(indices), 1, dtype=torch.int32)
    return SparseConvTensor(features, torch.cat([batch, indices], 1), list(shape), 1), dense, mask


@pytest.mark.parametrize("subm", [True, False])
def test_spconv1_kernel_converted_matches_dense_conv3d(subm):
    kernel, cin, cout = (3, 1, 3), 3, 5
    stride, padding = ((1, 1, 1), (1, 0, 1)) if subm else ((2, 1, 2), (1, 0, 0))
    legacy = torch.randn(*kernel, cin, cout, generator=torch.Generator().manual_seed(2))   # [k0, k1, k2, Cin, Cout]
    key = "encoders.lidar.backbone.conv_input.0.weight"
    converted, report = convert_state_dict({key: legacy})
    assert report.sparse_converted == [key]
    layer = (SubMConv3d(cin, cout, kernel, padding=padding, bias=False, indice_key="t") if subm
             else SparseConv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False))
    layer.load_state_dict({"weight": converted[key]})
    x, dense, mask = sparse_input((7, 6, 8), cin, seed=3)
    with torch.no_grad():
        out = layer(x).dense()
    dense_kernel = legacy.permute(4, 3, 0, 1, 2)   # by hand: [Cout, Cin, k0, k1, k2]
    want = F.conv3d(dense, dense_kernel, stride=stride, padding=padding)
    if subm:
        want = want * mask
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    # the check has teeth: the 1.x tensor merely reshaped to 2.x gives something else
    layer.load_state_dict({"weight": legacy.reshape(converted[key].shape)})
    with torch.no_grad():
        assert not torch.allclose(layer(x).dense(), want, atol=1e-3)


def test_sparse_layout_detection_with_a_target():
    v2_target = {"encoders.lidar.backbone.a.weight": torch.zeros(16, 3, 3, 3, 8),
                 "encoders.lidar.backbone.b.weight": torch.zeros(16, 3, 3, 3, 8),
                 "encoders.lidar.backbone.c.weight": torch.zeros(3, 3, 3, 3, 3)}
    official = {"encoders.lidar.backbone.a.weight": torch.randn(3, 3, 3, 8, 16),   # 1.x
                "encoders.lidar.backbone.b.weight": torch.randn(16, 3, 3, 3, 8),   # already 2.x
                "encoders.lidar.backbone.c.weight": torch.randn(3, 3, 3, 3, 3)}    # both fit
    converted, report = convert_state_dict(official, v2_target)
    assert report.sparse_converted == ["encoders.lidar.backbone.a.weight", "encoders.lidar.backbone.c.weight"]
    assert report.sparse_kept == ["encoders.lidar.backbone.b.weight"]
    assert report.sparse_ambiguous == ["encoders.lidar.backbone.c.weight"]
    torch.testing.assert_close(converted["encoders.lidar.backbone.a.weight"],
                               official["encoders.lidar.backbone.a.weight"].permute(4, 0, 1, 2, 3))
    assert torch.equal(converted["encoders.lidar.backbone.b.weight"], official["encoders.lidar.backbone.b.weight"])
    with pytest.raises(ValueError, match="5-D"):
        sparse_kernel_v1_to_v2(torch.zeros(3, 3, 3, 3))


def test_torchsparse_kernels_are_refused():
    with pytest.raises(ValueError, match=r"conv_input\.0\.kernel.*torchsparse"):
        convert_state_dict({"encoders.lidar.backbone.conv_input.0.kernel": torch.zeros(27, 5, 16)})


# ----------------------------------------------------------------------------------------------------- key names
def test_simdistill_gcm_keys_and_dropped_constants():
    gcm = BEVDeformableAttention(channels=16, bev_h=6, bev_w=6, num_heads=4, num_points=2)
    target = {"deformAttn." + k: v for k, v in gcm.state_dict().items()}
    torch.manual_seed(3)
    official = {"deformAttn.query_embeds.0.weight": torch.randn(36, 16),
                "deformAttn.pe.0.row_embed.weight": torch.randn(6, 8),
                "deformAttn.pe.0.col_embed.weight": torch.randn(6, 8),
                "encoders.camera.vtransform.frustum": torch.randn(4, 2, 3, 3),
                "encoders_student.camera.vtransform2.nx": torch.tensor([6, 6, 1]),
                "deform.defconv1.weight": torch.randn(16, 16, 3, 3)}
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        for p in ("weight", "bias"):
            official[f"deformAttn.el.0.self_attn.{name}.{p}"] = torch.randn_like(target[f"deformAttn.{name}.{p}"])
    converted, report = convert_state_dict(official, target)
    assert sorted(converted) == sorted(target)
    assert torch.equal(converted["deformAttn.pos.row_embed.weight"], official["deformAttn.pe.0.row_embed.weight"])
    assert torch.equal(converted["deformAttn.value_proj.bias"], official["deformAttn.el.0.self_attn.value_proj.bias"])
    assert sorted(k for k, _ in report.dropped) == ["deformAttn.query_embeds.0.weight",
                                                     "encoders.camera.vtransform.frustum",
                                                     "encoders_student.camera.vtransform2.nx"]
    assert report.unmatched == ["deform.defconv1.weight"]
    gcm.load_state_dict({k[len("deformAttn."):]: v for k, v in converted.items()})


def test_original_swin_layout_becomes_mmdet_names():
    official = {"encoders.camera.backbone.patch_embed.proj.weight": torch.randn(4, 3, 4, 4),
                "encoders.camera.backbone.layers.0.blocks.0.attn.qkv.weight": torch.randn(12, 4),
                "encoders.camera.backbone.layers.0.blocks.0.mlp.fc2.bias": torch.randn(4),
                "encoders_student.camera.backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": torch.randn(12, 4)}
    converted, _ = convert_state_dict(official)
    assert sorted(converted) == ["encoders.camera.backbone.patch_embed.projection.weight",
                                 "encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.qkv.weight",
                                 "encoders.camera.backbone.stages.0.blocks.0.ffn.layers.1.bias",
                                 "encoders_student.camera.backbone.stages.0.blocks.0.attn.w_msa.qkv.weight"]


# ------------------------------------------------------------------------------------- whole file, with a config
@pytest.fixture(scope="module")
def ours_state():
    """A random LiDAR-only BEVFusion state dict of configs/synthetic/det/lidar.yaml, in our layout."""
    torch.manual_seed(4)
    return {k: torch.randn_like(v) if v.is_floating_point() else v.clone()
            for k, v in build_target_model(LIDAR_CONFIG).state_dict().items()}


def to_official(state):
    """Our state dict written as BEVFusion would store it (the inverse, from the conventions' definitions)."""
    out = {}
    for key, value in state.items():
        if key.startswith("encoders.lidar.backbone.") and value.dim() == 5:
            value = value.permute(1, 2, 3, 4, 0)   # [Cout, k0, k1, k2, Cin] -> spconv 1.x [k0, k1, k2, Cin, Cout]
        head = re.fullmatch(r"heads\.object\.task_heads\.\d+\.(dim|rot)\.1\.(weight|bias)", key)
        if head and head[1] == "dim":
            value = value[[1, 0, 2]]   # (log l, log w, log h) -> legacy (log w, log l, log h)
        if head and head[1] == "rot":
            value = torch.stack([-value[1], -value[0]])   # sin a = -cos yaw, cos a = -sin yaw
        out[key] = value.contiguous()
    return out


def save_official(path, state, **meta):
    torch.save({"state_dict": state, "meta": {"epoch": 20, **meta}}, path)
    return path


def test_cli_with_config_restores_our_weights(tmp_path, capsys, ours_state):
    official = dict(to_official(ours_state), **{"encoders.camera.vtransform.frustum": torch.zeros(4, 2, 3, 3),
                                                "deform.defconv1.weight": torch.randn(8, 8, 3, 3)})
    src = save_official(tmp_path / "official.pth", official)
    dst = tmp_path / "out" / "ours.pth"
    code, out, err = run_cli([src, dst, "--config", LIDAR_CONFIG, "--verbose"], capsys)
    assert code == 0, err
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"]["converted_from"] == str(src) and HEIGHT_NOTE in saved["meta"]["notes"]
    assert list(saved["state_dict"]) == list(ours_state)
    for key, value in ours_state.items():
        assert torch.equal(saved["state_dict"][key], value), key
    assert "1 keys match nothing" in out and "unmatched: deform.defconv1.weight" in out
    assert "dropped: encoders.camera.vtransform.frustum" in out and "CenterHead height channel is unchanged" in out
    num_sparse = sum(1 for k, v in ours_state.items() if k.startswith("encoders.lidar.backbone.") and v.dim() == 5)
    assert f"{num_sparse} sparse kernels permuted" in out and "24 CenterHead dim/rot layers remapped" in out


def test_cli_without_config_keeps_every_key(tmp_path, capsys, ours_state):
    official = dict(to_official(ours_state), **{"encoders.camera.vtransform.dx": torch.ones(3),
                                                "deform.defconv1.weight": torch.ones(1)})
    src = save_official(tmp_path / "official.pth", official)
    code, out, _ = run_cli([src, tmp_path / "ours.pth"], capsys)
    assert code == 0 and "no --config" in out
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"]
    assert sorted(state) == sorted(list(ours_state) + ["deform.defconv1.weight"])
    for key, value in ours_state.items():
        assert torch.equal(state[key], value), key


def test_config_mismatch_is_one_line_and_writes_nothing(tmp_path, capsys, ours_state):
    official = to_official(ours_state)
    del official["heads.object.task_heads.1.vel.1.bias"]
    official["decoder.neck.fuse.0.weight"] = torch.zeros(3, 3, 1, 1)
    src = save_official(tmp_path / "official.pth", official)
    dst = tmp_path / "ours.pth"
    dst.write_bytes(b"previous")
    code, out, err = run_cli([src, dst, "--config", LIDAR_CONFIG], capsys)
    line = one_line(err)
    assert code == 1 and out == ""
    assert str(src) in line and "heads.object.task_heads.1.vel.1.bias" in line
    assert "decoder.neck.fuse.0.weight: checkpoint [3, 3, 1, 1]" in line
    assert dst.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["official.pth", "ours.pth"]


def test_target_model_is_built_without_reading_the_teacher(tmp_path):
    config = tmp_path / "student.yaml"
    config.write_text(f"_base_: {os.path.join(REPO, 'configs', 'synthetic', 'det', 'simdistill.yaml')}\n"
                      f"model:\n  teacher_checkpoint: {tmp_path / 'missing_teacher.pth'}\n")
    keys = build_target_model(config).state_dict()
    assert any(k.startswith("heads_student.object.") for k in keys) and any(k.startswith("heads.object.") for k in keys)


# ------------------------------------------------------------------------------------------------- bad input
def test_corrupt_and_missing_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 20)
    truncated = tmp_path / "truncated.pth"
    save_official(truncated, {"a": torch.zeros(100)})
    truncated.write_bytes(truncated.read_bytes()[:300])
    for path in (garbage, truncated):
        code, _, err = run_cli([path, tmp_path / "out.pth"], capsys)
        assert code == 1 and str(path) in one_line(err) and "not a readable checkpoint" in err
        code, _, err = run_cli([path, tmp_path / "out.pth", "--unsafe-load"], capsys)
        assert code == 1 and str(path) in one_line(err)
    code, _, err = run_cli([tmp_path / "nope.pth", tmp_path / "out.pth"], capsys)
    assert code == 1 and "not found" in one_line(err) and "nope.pth" in err
    no_weights = tmp_path / "no_weights.pth"
    torch.save({"meta": {"epoch": 1}, "optimizer": {}}, no_weights)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_official_checkpoint(no_weights)
    assert not (tmp_path / "out.pth").exists()


def test_pickled_metadata_needs_unsafe_load(tmp_path, capsys):
    src = save_official(tmp_path / "mmcv.pth", {"encoders.lidar.backbone.w.weight": torch.randn(3, 3, 3, 2, 4)},
                        best_score=np.float64(0.7))
    code, _, err = run_cli([src, tmp_path / "out.pth"], capsys)
    line = one_line(err)
    assert code == 1 and str(src) in line and "--unsafe-load" in line and "numpy" in line
    assert not (tmp_path / "out.pth").exists()
    code, out, _ = run_cli([src, tmp_path / "out.pth", "--unsafe-load"], capsys)
    assert code == 0 and "1 sparse kernels permuted" in out
    assert torch.load(tmp_path / "out.pth", weights_only=True)["state_dict"]["encoders.lidar.backbone.w.weight"].shape \
        == (4, 3, 3, 3, 2)


def test_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    src = save_official(tmp_path / "official.pth", {"encoders.lidar.backbone.w.weight": torch.randn(3, 3, 3, 2, 4)})
    dst = tmp_path / "ours.pth"
    dst.write_bytes(b"previous")

    def failing_replace(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(src, dst)
    assert dst.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["official.pth", "ours.pth"]


def test_cli_process_reports_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage")
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, CLI, str(garbage), str(tmp_path / "out.pth")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert one_line(result.stderr).startswith(f"error: {garbage}: not a readable checkpoint")


@pytest.mark.slow
def test_paper_teacher_config_round_trip(tmp_path):
    """The paper's Swin-T LiDAR-camera teacher: no rule touches a key it should not, and the whole model loads."""
    config = os.path.join(REPO, "configs", "nuscenes", "det", "centerhead", "lssfpn", "camera+lidar", "swint",
                          "convfuser.yaml")
    ours = build_target_model(config).state_dict()
    official = dict(to_official(ours), **{f"encoders.camera.vtransform.{k}": torch.zeros(3)
                                          for k in ("dx", "bx", "nx", "frustum")})
    src = save_official(tmp_path / "bevfusion.pth", official)
    report = convert_checkpoint(src, tmp_path / "ours.pth", config=config)
    assert report.unmatched == [] and len(report.dropped) == 4 and len(report.box_layers) == 24
    assert len(report.sparse_converted) == sum(1 for v in ours.values() if v.dim() == 5)
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"]
    assert list(state) == list(ours) and all(torch.equal(state[k], v) for k, v in ours.items())
