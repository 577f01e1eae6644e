"""Weights of the released BEVFormer (``bevformer_r101_dcn_24ep.pth``, VARIANTS.md B.4) for the BEVFormer student.

``img_backbone.*`` and ``img_neck.*`` go to the student's backbone and neck as they are. Of ``pts_bbox_head.*`` only
the encoder side is used (B.5): the BEV queries and row/column embeddings, resampled from the released 200 x 200 grid
to the student's, the level and camera embeddings and the encoder layers. The CAN-bus MLP is folded into the queries:
with the all-zero CAN bus of B.5 it adds one constant vector to every query. The DETR decoder, query embeddings,
classification/regression branches and reference-point layer have no counterpart and are skipped.
"""
from collections import Counter

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from mmdet3d.utils.checkpoint import describe_mismatch, extract_state_dict, read_checkpoint

__all__ = ["convert_bevformer_state", "load_bevformer_weights"]

HEAD = "pts_bbox_head."
DIRECT = {"img_backbone.": "backbone.", "img_neck.": "neck.",
          HEAD + "transformer.encoder.layers.": "vtransform.layers.",
          HEAD + "transformer.level_embeds": "vtransform.level_embeds",
          HEAD + "transformer.cams_embeds": "vtransform.cams_embeds"}
BEV_EMBEDDING = HEAD + "bev_embedding.weight"
ROW, COL = HEAD + "positional_encoding.row_embed.weight", HEAD + "positional_encoding.col_embed.weight"
CAN_BUS = HEAD + "transformer.can_bus_mlp."
CAN_BUS_INPUTS = 18


def _resample_1d(table, size):
    """[n, F] embedding table -> [size, F], linear between the n cell centres."""
    return F.interpolate(table.t()[None].float(), size=size, mode="linear", align_corners=False)[0].t()


def _can_bus_constant(state, path):
    """What BEVFormer's ``can_bus_mlp`` adds to every query for an all-zero CAN bus, or None without the MLP."""
    keys = [k for k in state if k.startswith(CAN_BUS)]
    if not keys:
        return None
    try:
        hidden = torch.relu(state[CAN_BUS + "0.bias"].float())
        if state[CAN_BUS + "0.weight"].shape[1] != CAN_BUS_INPUTS:
            raise ValueError(f"{path}: {CAN_BUS}0.weight must take {CAN_BUS_INPUTS} CAN-bus values, got "
                             f"{list(state[CAN_BUS + '0.weight'].shape)}")
        out = torch.relu(state[CAN_BUS + "2.weight"].float() @ hidden + state[CAN_BUS + "2.bias"].float())
    except KeyError as e:
        raise ValueError(f"{path}: {CAN_BUS}* lacks {e.args[0]}") from None
    if CAN_BUS + "norm.weight" in state:
        out = F.layer_norm(out, out.shape, state[CAN_BUS + "norm.weight"].float(), state[CAN_BUS + "norm.bias"].float())
    return out


def convert_bevformer_state(state, encoder, path="state dict"):
    """``(weights for the student camera ModuleDict {backbone, neck, vtransform}, report)``; ``encoder`` is that
    ModuleDict (its BEVFormer encoder gives the target grid). ``report``: counts per part, grid sizes, skipped keys."""
    target = encoder["vtransform"]
    out, skipped = {}, []
    for key, value in state.items():
        prefix = next((p for p in DIRECT if key.startswith(p)), None)
        if prefix is not None:
            out[DIRECT[prefix] + key[len(prefix):]] = value
        elif key not in (BEV_EMBEDDING, ROW, COL) and not key.startswith(CAN_BUS):
            skipped.append(key)
    report = {"grid": None, "can_bus_folded": False}
    if BEV_EMBEDDING in state:
        queries = state[BEV_EMBEDDING]
        rows = state[ROW].shape[0] if ROW in state else round(queries.shape[0] ** 0.5)
        if queries.dim() != 2 or queries.shape[0] % rows:
            raise ValueError(f"{path}: {BEV_EMBEDDING} {list(queries.shape)} is not a grid of {rows} rows")
        cols = queries.shape[0] // rows
        constant = _can_bus_constant(state, path)
        grid = queries.float().view(rows, cols, -1).permute(2, 0, 1)[None]  # rows = y, columns = x
        grid = F.interpolate(grid, size=(target.bev_h, target.bev_w), mode="bilinear", align_corners=False)
        queries = grid[0].permute(1, 2, 0).flatten(0, 1)
        if constant is not None:
            queries = queries + constant
        out["vtransform.bev_embedding.weight"] = queries.to(state[BEV_EMBEDDING].dtype)
        report.update(grid=((rows, cols), (target.bev_h, target.bev_w)), can_bus_folded=constant is not None)
    for key, name, size in ((ROW, "row_embed", target.bev_h), (COL, "col_embed", target.bev_w)):
        if key in state:
            out[f"vtransform.positional_encoding.{name}.weight"] = _resample_1d(state[key], size).to(state[key].dtype)
    report["parts"] = Counter(k.split(".")[0] for k in out)
    report["skipped"] = skipped
    return out, report


def _skipped_summary(keys):
    """``pts_bbox_head.cls_branches 42, pts_bbox_head.transformer.decoder 240, ...``"""
    def group(key):
        parts = key.split(".")
        return ".".join(parts[:3] if key.startswith(HEAD + "transformer.") else parts[:2])

    return ", ".join(f"{name} {n}" for name, n in sorted(Counter(map(group, keys)).items()))


def load_bevformer_weights(encoder, path):
    """Loads ``path`` into the student camera ModuleDict ``encoder`` and logs one line: what was loaded, resized,
    folded and skipped. Tensors of another shape, or keys its backbone/neck/encoder lack, are an error."""
    state = extract_state_dict(read_checkpoint(path), path)
    weights, report = convert_bevformer_state(state, encoder, path)
    if not weights:
        raise ValueError(f"{path}: no BEVFormer weights (keys img_backbone.*, img_neck.*, pts_bbox_head.*)")
    own = encoder.state_dict()
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
              for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if unexpected or shapes:
        raise ValueError(f"{path}: not the student's architecture: {describe_mismatch([], unexpected, shapes)}")
    # Only the three parts the file covers; the camera branch (vtransform2) is never in it.
    kept = [k for k in own if k.split(".")[0] in report["parts"] and k not in weights
            and not k.endswith("num_batches_tracked")]
    encoder.load_state_dict(weights, strict=False)
    parts = ", ".join(f"{p} {n}" for p, n in sorted(report["parts"].items()))
    grid = ""
    if report["grid"]:
        (r0, c0), (r1, c1) = report["grid"]
        grid = f"; BEV queries {r0}x{c0} -> {r1}x{c1}, row/col embeddings resampled"
        grid += ", CAN-bus MLP folded into the queries" if report["can_bus_folded"] else ""
    print_log(f"BEVFormer weights from {path}: loaded {len(weights)} tensors ({parts}){grid}; skipped "
              f"{len(report['skipped'])} ({_skipped_summary(report['skipped']) or 'none'}); own initialisation kept "
              f"for {len(kept)} ({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})", logger="current")
    return report
