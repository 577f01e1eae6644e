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

from helpers.tools import load_tool
from mmdet3d.utils.checkpoint import CheckpointError, extract_state_dict, load_state_dict_checked, read_checkpoint
from mmdet3d.core.boxes import legacy_to_boxes
from mmdet3d.models.fusion_models.gcm import BEVDeformableAttention
from mmdet3d.ops.spconv import SparseConv3d, SparseConvTensor, SubMConv3d
from mmdet3d.registry import MODELS
from mmdet3d.apis.checkpoint_convert import (HEIGHT_NOTE, build_target_model, check_partial_fit, check_strict_fit,
                                              convert_checkpoint, convert_state_dict, group_keys,
                                              legacy_box_rows_to_ours, load_official_checkpoint,
                                              sparse_kernel_v1_to_v2)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "tools", "convert_checkpoint.py")
LIDAR_CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "lidar.yaml")


def load_cli():
    return load_tool("convert_checkpoint")


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
                "deform.defconv1.weight": torch.randn(16, 16, 3, 3),
                "decoder.backbone.blocks.0.0.weight": torch.randn(4, 4, 3, 3)}
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        for p in ("weight", "bias"):
            official[f"deformAttn.el.0.self_attn.{name}.{p}"] = torch.randn_like(target[f"deformAttn.{name}.{p}"])
    converted, report = convert_state_dict(official, target)
    assert sorted(converted) == sorted(target)
    assert torch.equal(converted["deformAttn.pos.row_embed.weight"], official["deformAttn.pe.0.row_embed.weight"])
    assert torch.equal(converted["deformAttn.value_proj.bias"], official["deformAttn.el.0.self_attn.value_proj.bias"])
    assert sorted(k for k, _ in report.dropped) == ["deform.defconv1.weight", "deformAttn.query_embeds.0.weight",
                                                     "encoders.camera.vtransform.frustum",
                                                     "encoders_student.camera.vtransform2.nx"]
    assert report.unmatched == ["decoder.backbone.blocks.0.0.weight"]
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
        head = re.fullmatch(r"(?:heads|heads_student)\.object\.task_heads\.\d+\.(dim|rot)\.1\.(weight|bias)", key)
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
                                                "decoder.backbone.blocks.0.0.weight": torch.randn(8, 8, 3, 3)})
    src = save_official(tmp_path / "official.pth", official)
    dst = tmp_path / "out" / "ours.pth"
    code, out, err = run_cli([src, dst, "--config", LIDAR_CONFIG, "--verbose"], capsys)
    assert code == 0, err
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"]["converted_from"] == str(src) and HEIGHT_NOTE in saved["meta"]["notes"]
    assert list(saved["state_dict"]) == list(ours_state)
    for key, value in ours_state.items():
        assert torch.equal(saved["state_dict"][key], value), key
    assert "1 keys match nothing" in out and "unmatched: decoder.backbone.blocks.0.0.weight" in out
    assert "dropped: encoders.camera.vtransform.frustum" in out and "CenterHead height channel is unchanged" in out
    num_sparse = sum(1 for k, v in ours_state.items() if k.startswith("encoders.lidar.backbone.") and v.dim() == 5)
    assert f"{num_sparse} sparse kernels permuted" in out and "24 CenterHead dim/rot layers remapped" in out


def test_cli_without_config_keeps_every_key(tmp_path, capsys, ours_state):
    official = dict(to_official(ours_state), **{"encoders.camera.vtransform.dx": torch.ones(3),
                                                "decoder.backbone.blocks.0.0.weight": torch.ones(1)})
    src = save_official(tmp_path / "official.pth", official)
    code, out, _ = run_cli([src, tmp_path / "ours.pth"], capsys)
    assert code == 0 and "no --config" in out
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"]
    assert sorted(state) == sorted(list(ours_state) + ["decoder.backbone.blocks.0.0.weight"])
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


# ------------------------------------------------------------------------- MIT BEVFusion's released checkpoints
PAPER = os.path.join(REPO, "configs", "nuscenes", "det", "centerhead", "lssfpn")
PAPER_TEACHER = os.path.join(PAPER, "camera+lidar", "swint", "convfuser.yaml")
PAPER_CAMERA_ONLY = os.path.join(PAPER, "camera", "256x704", "swint", "lss.yaml")
PAPER_LIDAR_ONLY = os.path.join(PAPER, "lidar", "voxelnet.yaml")
SIMDISTILL_CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "simdistill.yaml")
# Paper-size models with a thin Swin (embed 24 instead of 96; the heads still divide it) to keep files small.
THIN_SWIN = ["--swint_backbone.embed_dims", "24", "--camera_neck.in_channels", "[48, 96, 192]"]


def random_state(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def bn_state(prefix, channels):
    g = torch.Generator().manual_seed(len(prefix))
    return {f"{prefix}.weight": torch.rand(channels, generator=g) + 0.5, f"{prefix}.bias": torch.randn(channels),
            f"{prefix}.running_mean": torch.randn(channels), f"{prefix}.running_var": torch.rand(channels) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(100)}


def grid_constants(prefix, depth_bins=118, feature_size=(32, 88)):
    """BEVFusion's BaseTransform stores its grid as frozen parameters (REFERENCE §4.3: D = 118, 32 x 88 features)."""
    return {f"{prefix}.dx": torch.tensor([0.3, 0.3, 20.0]), f"{prefix}.bx": torch.tensor([-53.85, -53.85, 0.0]),
            f"{prefix}.nx": torch.tensor([360, 360, 1]), f"{prefix}.frustum": torch.zeros(depth_bins, *feature_size, 3)}


def mit_decoder_and_head():
    """The SECOND + SECONDFPN decoder and TransFusion head of MIT's bevfusion-det.pth / lidar-only-det.pth, with
    their configs' sizes (SECOND 256 -> [128, 256] x 5 layers, strides [1, 2]; SECONDFPN -> 2 x 256; TransFusion on
    512 channels, hidden 128, 10 classes, one decoder layer, FFN 256, prediction convs 64)."""
    out = {}
    for i, (cin, cout) in enumerate([(256, 128), (128, 256)]):
        layer = 0
        for j in range(6):
            out[f"decoder.backbone.blocks.{i}.{layer}.weight"] = torch.randn(cout, cin if j == 0 else cout, 3, 3)
            out.update(bn_state(f"decoder.backbone.blocks.{i}.{layer + 1}", cout))
            layer += 3
    out["decoder.neck.deblocks.0.0.weight"] = torch.randn(256, 128, 1, 1)      # stride-1 conv
    out["decoder.neck.deblocks.1.0.weight"] = torch.randn(256, 256, 2, 2)      # ConvTranspose2d [in, out, k, k]
    for i in range(2):
        out.update(bn_state(f"decoder.neck.deblocks.{i}.1", 256))
    head, hidden = "heads.object", 128
    out.update({f"{head}.shared_conv.weight": torch.randn(hidden, 512, 3, 3), f"{head}.shared_conv.bias": torch.randn(hidden),
                f"{head}.heatmap_head.0.conv.weight": torch.randn(hidden, hidden, 3, 3),
                f"{head}.heatmap_head.1.weight": torch.randn(10, hidden, 3, 3), f"{head}.heatmap_head.1.bias": torch.randn(10),
                f"{head}.class_encoding.weight": torch.randn(hidden, 10, 1), f"{head}.class_encoding.bias": torch.randn(hidden)})
    out.update(bn_state(f"{head}.heatmap_head.0.bn", hidden))
    layer = f"{head}.decoder.0"
    for attn in ("self_attn", "multihead_attn"):
        out.update({f"{layer}.{attn}.in_proj_weight": torch.randn(3 * hidden, hidden),
                    f"{layer}.{attn}.in_proj_bias": torch.randn(3 * hidden),
                    f"{layer}.{attn}.out_proj.weight": torch.randn(hidden, hidden),
                    f"{layer}.{attn}.out_proj.bias": torch.randn(hidden)})
    out.update({f"{layer}.linear1.weight": torch.randn(256, hidden), f"{layer}.linear1.bias": torch.randn(256),
                f"{layer}.linear2.weight": torch.randn(hidden, 256), f"{layer}.linear2.bias": torch.randn(hidden)})
    for norm in ("norm1", "norm2", "norm3"):
        out.update({f"{layer}.{norm}.weight": torch.randn(hidden), f"{layer}.{norm}.bias": torch.randn(hidden)})
    for pos in ("self_posembed", "cross_posembed"):
        p = f"{layer}.{pos}.position_embedding_head"
        out.update({f"{p}.0.weight": torch.randn(hidden, 2, 1), f"{p}.0.bias": torch.randn(hidden),
                    f"{p}.3.weight": torch.randn(hidden, hidden, 1), f"{p}.3.bias": torch.randn(hidden)})
        out.update(bn_state(f"{p}.1", hidden))
    for name, channels in (("center", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2), ("heatmap", 10)):
        p = f"{head}.prediction_heads.0.{name}"
        out[f"{p}.0.conv.weight"] = torch.randn(64, hidden, 1)
        out.update(bn_state(f"{p}.0.bn", 64))
        out.update({f"{p}.1.weight": torch.randn(channels, 64, 1), f"{p}.1.bias": torch.randn(channels)})
    return out


def test_group_keys():
    assert group_keys(["fuser.0.weight", "fuser.1.bias", "decoder.backbone.blocks.0.0.weight",
                       "encoders.camera.vtransform.depthnet.0.weight", "heads.object.task_heads.0.reg.1.bias",
                       "deformAttn.pos.row_embed.weight"]) == [
        "fuser (2)", "decoder.backbone (1)", "encoders.camera.vtransform (1)", "heads.object (1)", "deformAttn.pos (1)"]


def test_bevfusion_det_partial_warm_starts_the_centerhead_teacher(tmp_path, capsys):
    """MIT's bevfusion-det.pth (Swin-T + DepthLSS, SparseEncoder, ConvFuser; SECOND + TransFusion) -> our teacher."""
    model = build_target_model(PAPER_TEACHER, THIN_SWIN)
    ours = random_state(model, 5)
    supplied = {k: v for k, v in ours.items() if k.startswith(("encoders.", "fuser."))}
    left = [k for k in ours if k not in supplied]
    # the shapes of REFERENCE §3.1-3.3 and §4.3
    assert supplied["fuser.0.weight"].shape == (256, 80 + 256, 3, 3)
    assert supplied["encoders.camera.vtransform.depthnet.0.weight"].shape == (256, 64 + 256, 3, 3)
    assert supplied["encoders.camera.vtransform.depthnet.6.weight"].shape == (118 + 80, 256, 1, 1)
    assert supplied["encoders.lidar.backbone.conv_input.0.weight"].shape == (16, 3, 3, 3, 5)
    assert supplied["encoders.lidar.backbone.conv_out.0.weight"].shape == (128, 1, 1, 3, 128)
    assert left and all(k.startswith(("decoder.backbone.", "decoder.neck.", "heads.object.")) for k in left)
    mit_rest = mit_decoder_and_head()
    official = dict(to_official(supplied), **grid_constants("encoders.camera.vtransform"), **mit_rest)
    src = save_official(tmp_path / "bevfusion-det.pth", official)
    dst = tmp_path / "teacher_init.pth"

    code, out, err = run_cli([src, dst, "--config", PAPER_TEACHER, *THIN_SWIN], capsys)   # strict: refused
    line = one_line(err)
    assert code == 1 and out == "" and "decoder.backbone.0.0.conv1.weight" in line and "--partial" in line
    assert not dst.exists()

    code, out, err = run_cli([src, dst, "--config", PAPER_TEACHER, "--partial", *THIN_SWIN], capsys)
    assert code == 0, err
    saved = torch.load(dst, weights_only=True)
    assert list(saved["state_dict"]) == list(supplied)
    for key, value in supplied.items():
        assert torch.equal(saved["state_dict"][key], value), key
    assert saved["meta"]["left_at_init"] == left
    groups = ", ".join(group_keys(left))
    assert groups.startswith("decoder.backbone (") and "heads.object (" in groups
    assert f"partial: {len(left)} keys of the model are not in {src} and stay at their initialisation: {groups}" in out
    assert f"{len(mit_rest)} keys match nothing in the model" in out and "decoder.neck (4)" not in out
    assert "dropped 4: view-transform grid constants" in out

    # --load_from: the training runner's non-strict load keeps the decoder and head at their initialisation
    fresh = build_target_model(PAPER_TEACHER, THIN_SWIN)
    init = {k: v.clone() for k, v in fresh.state_dict().items()}
    missing, unexpected = load_state_dict_checked(fresh, extract_state_dict(read_checkpoint(dst), dst), dst,
                                                  strict=False)
    assert missing == left and unexpected == []
    after = fresh.state_dict()
    assert all(torch.equal(after[k], v) for k, v in supplied.items())
    assert all(torch.equal(after[k], init[k]) for k in left)


def test_lidar_only_det_partial_into_our_lidar_model():
    """MIT's lidar-only-det.pth (SparseEncoder; SECOND + TransFusion) -> our LiDAR-only CenterHead model."""
    model = build_target_model(PAPER_LIDAR_ONLY)
    ours = random_state(model, 6)
    supplied = {k: v for k, v in ours.items() if k.startswith("encoders.lidar.")}
    mit_rest = mit_decoder_and_head()
    state, report = convert_state_dict(dict(to_official(supplied), **mit_rest), model.state_dict())
    assert sorted(report.unmatched) == sorted(mit_rest)
    assert report.left_at_init == [k for k in ours if k not in supplied]
    assert len(report.sparse_converted) == sum(1 for v in supplied.values() if v.dim() == 5) > 0
    with pytest.raises(CheckpointError, match=r"lidar-only-det.pth: .*missing.*--partial"):
        check_strict_fit(model, state, "lidar-only-det.pth")
    check_partial_fit(model, state, "lidar-only-det.pth")
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in supplied.items())


def test_camera_only_det_converts_whole_into_bevfusion_c():
    """MIT's camera-only-det.pth is BEVFusion-C (Swin-T, LSS, GeneralizedResNet + LSSFPN, CenterHead): strict."""
    model = build_target_model(PAPER_CAMERA_ONLY, THIN_SWIN)
    ours = random_state(model, 7)
    assert ours["encoders.camera.vtransform.depthnet.weight"].shape == (118 + 80, 256, 1, 1)
    assert ours["decoder.backbone.0.0.conv1.weight"].shape == (128, 80, 3, 3)
    official = dict(to_official(ours), **grid_constants("encoders.camera.vtransform"))
    state, report = convert_state_dict(official, model.state_dict())
    assert report.unmatched == [] and report.left_at_init == [] and len(report.box_layers) == 24
    check_strict_fit(model, state, "camera-only-det.pth")
    assert list(state) == list(ours) and all(torch.equal(state[k], v) for k, v in ours.items())


def test_partial_and_overrides_need_a_config(tmp_path, capsys, ours_state):
    src = save_official(tmp_path / "official.pth", to_official(ours_state))
    for extra in (["--partial"], ["--model.official", "true"]):
        code, out, err = run_cli([src, tmp_path / "out.pth", *extra], capsys)
        assert code == 1 and out == "" and "need --config" in one_line(err)
    code, _, err = run_cli([src, tmp_path / "out.pth", "--config", LIDAR_CONFIG, "--model.no_such_key", "1"], capsys)
    assert code == 1 and "no_such_key" in one_line(err)
    other = save_official(tmp_path / "second.pth", {"decoder.backbone.blocks.0.0.weight": torch.zeros(8, 8, 3, 3)})
    code, _, err = run_cli([other, tmp_path / "out.pth", "--config", LIDAR_CONFIG, "--partial"], capsys)
    assert code == 1 and "nothing to convert" in one_line(err)
    assert not (tmp_path / "out.pth").exists()


def test_target_model_ignores_pretrained_files(tmp_path):
    config = os.path.join(REPO, "configs", "synthetic", "det", "teacher.yaml")
    model = build_target_model(config, ["--pretrained_camera", str(tmp_path / "absent.pth")])
    assert any(k.startswith("encoders.camera.backbone.") for k in model.state_dict())


# ---------------------------------------------------------------------------------- released SimDistill layout
def released_simdistill(ours, shared_vtransform):
    """Our SimDistill state dict written as the released code stores it: GCM as ``DFA`` (``pe.0``, ``el.0.self_attn``,
    an unused ``query_embeds``), in every DepthLSSTransform the image-plane DFA (REFERENCE §4.3: 256-d, 32 x 88,
    8 heads x 10 points) and the unused ``conv``/``deconv``/``deformconv``, grid constants, the unused BEV ``deform``
    convs, and ``vtransform2`` in the student even when the code shares one view transform. Returns
    ``(state, added keys)``."""
    state = {}
    for key, value in to_official(ours).items():
        if key.startswith("deformAttn.pos."):
            key = "deformAttn.pe.0." + key[len("deformAttn.pos."):]
        elif key.startswith("deformAttn."):
            key = "deformAttn.el.0.self_attn." + key[len("deformAttn."):]
        state[key] = value
    added = {}
    bev_h, half = ours["deformAttn.pos.col_embed.weight"].shape
    bev_w = ours["deformAttn.pos.row_embed.weight"].shape[0]
    added["deformAttn.query_embeds.0.weight"] = torch.randn(bev_h * bev_w, 2 * half)
    if shared_vtransform:   # built by the released code, never called
        prefix = "encoders_student.camera.vtransform."
        added.update({"encoders_student.camera.vtransform2." + k[len(prefix):]:
                      torch.randn_like(v) if v.is_floating_point() else v.clone()
                      for k, v in state.items() if k.startswith(prefix)})
    vtransforms = ["encoders.camera.vtransform", "encoders_student.camera.vtransform",
                   "encoders_student.camera.vtransform2"]
    for vt in vtransforms:
        dfa = f"{vt}.deformAttn"
        added.update({f"{dfa}.query_embeds.0.weight": torch.randn(32 * 88, 256),
                      f"{dfa}.pe.0.col_embed.weight": torch.rand(32, 128),
                      f"{dfa}.pe.0.row_embed.weight": torch.rand(88, 128)})
        for name, rows in (("sampling_offsets", 8 * 10 * 2), ("attention_weights", 8 * 10), ("value_proj", 256),
                           ("output_proj", 256)):
            added.update({f"{dfa}.el.0.self_attn.{name}.weight": torch.randn(rows, 256),
                          f"{dfa}.el.0.self_attn.{name}.bias": torch.randn(rows)})
        added.update({f"{vt}.conv.weight": torch.randn(80, 256, 3, 3), f"{vt}.conv.bias": torch.randn(80),
                      f"{vt}.deconv.weight": torch.randn(256, 80, 3, 3), f"{vt}.deconv.bias": torch.randn(256)})
        for conv in ("defconv1", "defconv2"):
            added.update({f"{vt}.deformconv.{conv}.weight": torch.randn(80, 80, 3, 3),
                          f"{vt}.deformconv.{conv}.bias": torch.randn(80)})
        added.update(grid_constants(vt))
    for conv in ("defconv1", "defconv2"):
        added.update({f"deform.{conv}.weight": torch.randn(80, 80, 3, 3), f"deform.{conv}.bias": torch.randn(80)})
    state.update(added)
    return state, added


@pytest.mark.parametrize("official", ["true", "{student_depth_input: true}"])
def test_released_simdistill_layout_converts_and_loads_strictly(tmp_path, capsys, official):
    overrides = ["--model.official", official]
    model = build_target_model(SIMDISTILL_CONFIG, overrides)
    ours = random_state(model, 8)
    shared = not any(k.startswith("encoders_student.camera.vtransform2.") for k in ours)
    assert shared == (official == "true")
    assert any(".vtransform.dtransform." in k for k in ours if k.startswith("encoders_student."))  # DepthLSS
    released, added = released_simdistill(ours, shared)
    src = save_official(tmp_path / "simdistill_released.pth", released)
    dst = tmp_path / "simdistill.pth"
    code, out, err = run_cli([src, dst, "--config", SIMDISTILL_CONFIG, *overrides, "--verbose"], capsys)
    assert code == 0, err
    dropped = {m[1]: m[2] for m in re.finditer(r"^  dropped: (\S+) \((.+)\)$", out, re.MULTILINE)}
    assert sorted(dropped) == sorted(added)   # every key of the released layout we do not keep, each with a reason
    assert "0 keys match nothing" in out and "the rest loads strictly" in out
    reasons = {
        "encoders.camera.vtransform.deformAttn.query_embeds.0.weight": "image-plane deformable attention",
        "encoders_student.camera.vtransform.deformAttn.el.0.self_attn.value_proj.bias": "REFERENCE F10",
        "encoders_student.camera.vtransform.deconv.weight": "unused convs of SimDistill's view transform",
        "encoders.camera.vtransform.deformconv.defconv2.bias": "unused convs",
        "encoders.camera.vtransform.frustum": "grid constants",
        "deform.defconv1.weight": "unused BEV deform convs",
        "deformAttn.query_embeds.0.weight": "unused DFA query embedding",
    }
    if shared:
        reasons["encoders_student.camera.vtransform2.depthnet.0.weight"] = "never called by the released code"
    for key, reason in reasons.items():
        assert reason in dropped[key], (key, dropped[key])
    assert re.search(r"^  dropped \d+: SimDistill's image-plane deformable attention", out, re.MULTILINE)
    state = torch.load(dst, weights_only=True)["state_dict"]
    assert list(state) == list(ours) and all(torch.equal(state[k], v) for k, v in ours.items())
    fresh = build_target_model(SIMDISTILL_CONFIG, overrides)   # what test.py does: a strict load
    load_state_dict_checked(fresh, state, dst, strict=True)


def test_released_simdistill_teacher_extracted_into_a_teacher_config():
    """The teacher of a released SimDistill checkpoint, into our BEVFusion teacher: the student is unmatched."""
    student_model = build_target_model(SIMDISTILL_CONFIG, ["--model.official", "true"])
    teacher_model = build_target_model(os.path.join(REPO, "configs", "synthetic", "det", "teacher.yaml"))
    ours = random_state(student_model, 9)
    released, _ = released_simdistill(ours, shared_vtransform=True)
    state, report = convert_state_dict(released, teacher_model.state_dict())
    check_strict_fit(teacher_model, state, "simdistill_released.pth")
    assert all(torch.equal(state[k], ours[k]) for k in state)
    assert any(k.startswith("encoders_student.camera.vtransform2.") for k in report.unmatched)   # not "shared"
    assert all(k.split(".")[0] in ("encoders_student", "fuser_student", "trans_student", "decoder_student",
                                   "heads_student", "deformAttn") for k in report.unmatched)
