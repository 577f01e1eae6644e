"""Official BEVFusion (mit-han-lab) and SimDistill checkpoints -> state dicts of this package.

``convert_checkpoint(src, dst, config=None)`` does, in order:

1. **Load.** ``torch.load(weights_only=True)``; the weights are the ``state_dict`` entry or the top level (a
   ``module.`` prefix from DDP is stripped). mmcv-era files may pickle non-tensor metadata (numpy scalars in
   ``meta``...) that weights-only loading refuses; the error then names the refused globals and points to
   ``unsafe_load=True`` (CLI ``--unsafe-load``), i.e. ``weights_only=False``, which executes the pickle's code: use it
   only for files you trust.
2. **Keys.** Our modules keep BEVFusion's names (DESIGN §4): ``encoders.camera.{backbone,neck,vtransform}`` (Swin
   with mmdet's key names, ResNet as torchvision = mmdet, ``GeneralizedLSSFPN`` ConvModules ``conv``/``bn``,
   ``dtransform``/``depthnet``/``downsample``), ``encoders.lidar.backbone`` (``conv_input``,
   ``encoder_layers.encoder_layer{i}``, ``conv_out``, blocks ``conv1/bn1/conv2/bn2``), ``fuser``,
   ``decoder.backbone`` (mmcv ``make_res_layer`` names), ``decoder.neck`` (``fuse``, ``upsample``),
   ``heads.object`` (``shared_conv``, ``task_heads.{t}.{head}.{i}``), and for SimDistill ``*_student`` and
   ``trans_student``. What differs:

   * Swin weights in Microsoft's original layout (``layers.*``) under a camera backbone go through
     ``convert_official_swin`` (mmdet names, patch-merging channel order).
   * SimDistill's BEV GCM ``DFA``: ``deformAttn.pe.0.*`` -> ``deformAttn.pos.*``,
     ``deformAttn.el.0.self_attn.*`` -> ``deformAttn.*``.
   * Dropped on purpose, each with its reason in the report: the view transforms' ``dx``/``bx``/``nx``/``frustum``
     (grid constants stored as frozen parameters; ours recompute them from the config); from the released
     SimDistill code, ``deformAttn.query_embeds`` (never used, REFERENCE F9), the image-plane deformable attention
     inside every ``DepthLSSTransform`` (``vtransform.deformAttn``, REFERENCE F10: not part of this model) with that
     module's unused ``conv``/``deconv``/``deformconv``, the unused BEV ``deform`` convs, and, when the target
     model shares one student view transform (``official`` ``shared_vtransform``), ``vtransform2``, which the
     released code builds but never calls (REFERENCE F2).

   With a target model (``config``), every other key the model lacks is left out and reported as *unmatched* (e.g.
   the SECOND decoder and TransFusion head of MIT's ``bevfusion-det.pth``). Without one nothing else is dropped.
3. **Sparse convolutions.** BEVFusion's spconv-1.x clone stores kernels ``[k0, k1, k2, Cin, Cout]``; spconv 2.x
   expects ``[Cout, k0, k1, k2, Cin]``: ``permute(4, 0, 1, 2, 3)`` for every 5-D ``weight`` under
   ``encoders.lidar.backbone``. With a target model a tensor already of the target's shape is kept (a file converted
   before); when both layouts give the target's shape (cubic kernels with Cin = Cout = k) it is converted, as
   official files are 1.x. Without a target every 5-D weight is converted, so do not feed converted files again.
   torchsparse kernels (later BEVFusion, ``*.kernel``) are refused with an error.
4. **CenterHead box code.** The legacy heads regress ``[dx, dy, z, log w, log l, log h, sin a, cos a, vx, vy]``
   with ``a = -yaw - pi/2`` (BEVFusion's info convention, REFERENCE §2/§3.4); ours
   ``[dx, dy, z, log l, log w, log h, sin yaw, cos yaw, vx, vy]``. The last conv of each sub-head is linear in its
   rows, so the output channels are remapped in its weight and bias, for every task of ``heads.object`` and
   ``heads_student.object``:

   * ``dim``: swap rows 0 and 1;
   * ``rot``: ``sin yaw = -cos a`` and ``cos yaw = -sin a``, so the new rows are ``[-old[1], -old[0]]``.

   ``reg``, ``vel`` and ``heatmap`` need nothing. The ``height`` channel is left as is, and that is a quirk:
   BEVFusion trains it on the geometric centre plus h/2 (its "bottom" z is really the centre, REFERENCE §2), which is
   the z it exports to nuScenes. Converted models therefore put box centres h/2 above the geometric centre, exactly
   where BEVFusion's exported boxes sit; nuScenes metrics (2-D centre distance) are unaffected.
5. **Output.** ``{"state_dict": ..., "meta": {"converted_from": src, "notes": [...]}}``, checked with a strict load
   into the config's model when one is given, written atomically (temporary file + ``os.replace``): on any error no
   partial file is left and an existing ``dst`` is untouched.
6. **Partial conversion** (``partial=True``, CLI ``--partial``, needs a config): the model's keys the file lacks
   stay at their initialisation instead of failing the strict check; they are listed in the report
   (``left_at_init``) and in ``meta.left_at_init``. What the file does supply must still fit (names matched, shapes
   equal). This is how MIT's released checkpoints warm-start our CenterHead models (``--load_from OUT``, which
   loads the keys present): ``bevfusion-det.pth`` (Swin-T camera encoder, LiDAR encoder, ConvFuser, then a SECOND
   decoder and TransFusion head) and ``lidar-only-det.pth`` (LiDAR encoder, SECOND, TransFusion) give their
   encoders and fuser, our ``decoder``/``heads`` stay at initialisation and their SECOND/TransFusion keys are
   unmatched; ``camera-only-det.pth`` (BEVFusion-C: Swin-T, LSS, GeneralizedResNet + LSSFPN, CenterHead) converts
   whole into ``camera/256x704/swint/lss.yaml``. Use the files as downloaded, before BEVFusion's
   ``convert_checkpoints_to_torchsparse.py`` step.
"""
import dataclasses
import io
import os
import re
from collections import OrderedDict

import torch

from mmdet3d.utils.checkpoint import (CheckpointError, atomic_write_bytes, compare_state_dicts, describe_mismatch,
                                     extract_state_dict, read_checkpoint)
from mmdet3d.models.backbones.swin import convert_official_swin
from mmdet3d.registry import MODELS
from mmdet3d.utils.config import load_config

__all__ = ["ConversionReport", "HEIGHT_NOTE", "build_target_model", "check_partial_fit", "check_strict_fit",
           "convert_checkpoint", "convert_state_dict", "group_keys", "legacy_box_rows_to_ours",
           "load_official_checkpoint", "sparse_kernel_v1_to_v2"]

SPARSE_PREFIX = "encoders.lidar.backbone."
SWIN_PREFIXES = ("encoders.camera.backbone.", "encoders_student.camera.backbone.")
HEIGHT_NOTE = ("the CenterHead height channel is unchanged: like BEVFusion's exported boxes, converted models place "
               "box centres h/2 above the geometric centre (REFERENCE §2); nuScenes metrics are unaffected")

_RENAMES = (
    (re.compile(r"^deformAttn\.pe\.0\."), "deformAttn.pos."),
    (re.compile(r"^deformAttn\.el\.0\.self_attn\."), "deformAttn."),
)
_DROPS = (
    (re.compile(r"\.vtransform2?\.(dx|bx|nx|frustum)$"), "view-transform grid constants, recomputed from the config"),
    (re.compile(r"^deformAttn\.query_embeds\."), "SimDistill's unused DFA query embedding"),
    (re.compile(r"^(encoders|encoders_student)\.camera\.vtransform2?\.deformAttn\."),
     "SimDistill's image-plane deformable attention inside the view transform, not part of this model (REFERENCE F10)"),
    (re.compile(r"^(encoders|encoders_student)\.camera\.vtransform2?\.(conv|deconv|deformconv)\."),
     "unused convs of SimDistill's view transform"),
    (re.compile(r"^deform\."), "SimDistill's unused BEV deform convs"),
)
# Dropped only when the target model lacks the module: the released student's second view transform, never called.
_SHARED_VTRANSFORM = "encoders_student.camera.vtransform2."
_SHARED_VTRANSFORM_REASON = ("SimDistill's second student view transform, built but never called by the released code "
                             "(REFERENCE F2); the target model shares one")
# The final conv of a sub-head is a plain Conv2d (``dim.1.weight``); the ConvModules before it hold ``.conv.``/``.bn.``.
_BOX_LAYER = re.compile(r"^(?P<task>(heads|heads_student)\.object\.task_heads\.\d+)\.(?P<head>dim|rot)\."
                        r"(?P<index>\d+)\.(?P<param>weight|bias)$")
_BOX_ROWS = {"dim": 3, "rot": 2}


@dataclasses.dataclass
class ConversionReport:
    """What ``convert_state_dict`` did, key by key."""

    renamed: list = dataclasses.field(default_factory=list)           # (old, new)
    dropped: list = dataclasses.field(default_factory=list)           # (key, reason)
    unmatched: list = dataclasses.field(default_factory=list)         # keys the target model lacks, left out
    sparse_converted: list = dataclasses.field(default_factory=list)
    sparse_kept: list = dataclasses.field(default_factory=list)       # already spconv 2.x for the target
    sparse_ambiguous: list = dataclasses.field(default_factory=list)  # both layouts fit; converted
    box_layers: list = dataclasses.field(default_factory=list)        # last dim/rot layers remapped
    left_at_init: list = dataclasses.field(default_factory=list)      # target keys the file lacks
    checked_against_model: bool = False
    partial: bool = False

    def notes(self):
        """One line per kind of change, as stored in the output's ``meta.notes``."""
        notes = [f"{len(self.sparse_converted)} sparse-conv kernels permuted from spconv 1.x [k0,k1,k2,Cin,Cout] to "
                 f"2.x [Cout,k0,k1,k2,Cin]",
                 f"{len(self.box_layers)} CenterHead dim/rot output layers remapped from the legacy box code "
                 f"(w, l, h; -yaw - pi/2) to ours (l, w, h; yaw)",
                 HEIGHT_NOTE]
        if self.sparse_kept:
            notes.append(f"{len(self.sparse_kept)} sparse-conv kernels already in the spconv 2.x layout, kept")
        if self.sparse_ambiguous:
            notes.append(f"{len(self.sparse_ambiguous)} sparse-conv kernels fit both layouts and were treated as 1.x")
        if self.renamed:
            notes.append(f"{len(self.renamed)} keys renamed")
        if self.dropped:
            reasons = sorted({reason for _, reason in self.dropped})
            notes.append(f"{len(self.dropped)} keys dropped on purpose ({'; '.join(reasons)})")
        if self.checked_against_model:
            notes.append(f"{len(self.unmatched)} keys match nothing in the target model and were left out")
        else:
            notes.append("no target model given: keys were not checked against a model")
        if self.partial:
            notes.append(f"partial: {len(self.left_at_init)} keys of the target model are not in the source and stay "
                         f"at their initialisation ({', '.join(group_keys(self.left_at_init)) or 'none'})")
        return notes

    def dropped_by_reason(self):
        """``[(reason, [keys])]`` in the order the reasons first occur."""
        groups = {}
        for key, reason in self.dropped:
            groups.setdefault(reason, []).append(key)
        return list(groups.items())


def group_keys(keys):
    """``["decoder.backbone (72)", ...]``: keys counted by module (three levels under ``encoders*``, else two)."""
    counts = {}
    for key in keys:
        parts = key.split(".")
        depth = 3 if parts[0] in ("encoders", "encoders_student") else 2
        group = parts[:max(1, min(depth, len(parts) - 1))]
        while len(group) > 1 and group[-1].isdigit():   # fuser.0 -> fuser
            group.pop()
        group = ".".join(group)
        counts[group] = counts.get(group, 0) + 1
    return [f"{group} ({n})" for group, n in counts.items()]


# ------------------------------------------------------------------------------------------------------- loading
def _refused_globals(path):
    """Globals that weights-only loading refuses in a zip-format checkpoint (empty if none or not zip)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint, or unreadable: the original error says more
        return []


def load_official_checkpoint(path, unsafe_load=False):
    """The weights of an official checkpoint as ``{key: tensor}``; ``CheckpointError`` (one line) if unreadable."""
    path = os.fspath(path)
    if not unsafe_load:
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError:
            refused = _refused_globals(path)
            if refused:
                raise CheckpointError(
                    f"{path}: torch.load(weights_only=True) refuses its pickled non-tensor metadata "
                    f"({', '.join(refused[:3])}); if you trust this file, rerun with --unsafe-load "
                    f"(weights_only=False runs code from the file)") from None
            raise
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # damaged files raise RuntimeError, EOFError, UnpicklingError, ...
            first = (str(e).strip().splitlines() or [""])[0]
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
    state_dict = extract_state_dict(checkpoint, path)
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(state_dict)


# ---------------------------------------------------------------------------------------------------- tensor maps
def sparse_kernel_v1_to_v2(weight):
    """spconv 1.x kernel ``[k0, k1, k2, Cin, Cout]`` -> spconv 2.x ``[Cout, k0, k1, k2, Cin]``."""
    if weight.dim() != 5:
        raise ValueError(f"sparse_kernel_v1_to_v2: expected a 5-D kernel, got shape {list(weight.shape)}")
    return weight.permute(4, 0, 1, 2, 3).contiguous()


def legacy_box_rows_to_ours(tensor, head):
    """Output rows (dim 0 of a conv weight or bias) of the legacy ``dim``/``rot`` layer in our box code.

    ``dim``: (log w, log l, log h) -> (log l, log w, log h). ``rot``: (sin a, cos a) with a = -yaw - pi/2 ->
    (sin yaw, cos yaw) = (-cos a, -sin a).
    """
    if head not in _BOX_ROWS:
        raise ValueError(f"legacy_box_rows_to_ours: head must be 'dim' or 'rot', got {head!r}")
    if tensor.shape[0] != _BOX_ROWS[head]:
        raise ValueError(f"legacy_box_rows_to_ours: a {head!r} layer has {_BOX_ROWS[head]} output rows, "
                         f"got shape {list(tensor.shape)}")
    if head == "dim":
        return tensor[[1, 0, 2]].clone()
    return -tensor[[1, 0]]


# ------------------------------------------------------------------------------------------------------ key steps
def _convert_swin_layouts(state):
    for prefix in SWIN_PREFIXES:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k.startswith("layers.") for k in part):
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            state.update({prefix + k: v for k, v in convert_official_swin(part).items()})
    return state


def _rename_and_drop(state, report, target=None):
    shared_vtransform = (target is not None and any(k.startswith("encoders_student.camera.vtransform.") for k in target)
                         and not any(k.startswith(_SHARED_VTRANSFORM) for k in target))
    out = OrderedDict()
    for key, value in state.items():
        reason = next((why for pattern, why in _DROPS if pattern.search(key)), None)
        if reason is None and shared_vtransform and key.startswith(_SHARED_VTRANSFORM):
            reason = _SHARED_VTRANSFORM_REASON
        if reason is not None:
            report.dropped.append((key, reason))
            continue
        new = key
        for pattern, replacement in _RENAMES:
            new = pattern.sub(replacement, new)
        if new != key:
            report.renamed.append((key, new))
        out[new] = value
    return out


def _convert_sparse_kernels(state, target, report):
    for key, value in list(state.items()):
        if not key.startswith(SPARSE_PREFIX):
            continue
        if key.endswith(".kernel"):
            raise ValueError(f"{key}: a torchsparse kernel (BEVFusion after its move to torchsparse); only spconv "
                             f"1.x checkpoints can be converted")
        if not key.endswith(".weight") or value.dim() != 5:
            continue
        converted = sparse_kernel_v1_to_v2(value)
        wanted = target[key].shape if target is not None and key in target else None
        if wanted is not None and value.shape == wanted:
            if converted.shape != wanted:
                report.sparse_kept.append(key)
                continue
            report.sparse_ambiguous.append(key)
        state[key] = converted
        report.sparse_converted.append(key)


def _convert_box_layers(state, report):
    last = {}
    for key in state:
        match = _BOX_LAYER.match(key)
        if match:
            group = (match["task"], match["head"])
            last[group] = max(last.get(group, -1), int(match["index"]))
    for (task, head), index in sorted(last.items()):
        for param in ("weight", "bias"):
            key = f"{task}.{head}.{index}.{param}"
            if key in state:
                try:
                    state[key] = legacy_box_rows_to_ours(state[key], head)
                except ValueError as e:
                    raise ValueError(f"{key}: {e}") from None
                report.box_layers.append(key)


def convert_state_dict(state_dict, target_state=None):
    """Official weights -> ``(our state dict, ConversionReport)``.

    ``target_state`` (``model.state_dict()`` of the model to load into) decides which sparse kernels still need the
    permutation and which keys are unmatched; without it every 5-D sparse weight is converted and all keys are kept.
    """
    report = ConversionReport(checked_against_model=target_state is not None)
    state = _rename_and_drop(_convert_swin_layouts(dict(state_dict)), report, target_state)
    _convert_sparse_kernels(state, target_state, report)
    _convert_box_layers(state, report)
    if target_state is not None:
        report.unmatched = [k for k in state if k not in target_state]
        state = OrderedDict((k, v) for k, v in state.items() if k in target_state)
        report.left_at_init = [k for k in target_state if k not in state]
    return state, report


# --------------------------------------------------------------------------------------------------- model + file
def build_target_model(config_path, overrides=None):
    """Our model (``cfg.model``) of a config file (with ``--a.b value`` overrides), on CPU, without loading any
    pretrained file."""
    cfg = load_config(config_path, overrides)
    if "model" not in cfg:
        raise ValueError(f"{config_path}: the config has no 'model' section")
    model_cfg = cfg.model.to_dict()
    if model_cfg.get("teacher_checkpoint"):   # SimDistill would load its teacher while being built
        model_cfg["teacher_checkpoint"] = None
    _drop_pretrained(model_cfg)
    return MODELS.build(model_cfg)


def _drop_pretrained(node):
    """Removes backbone ``init_cfg``/``pretrained`` files (loaded at construction) from a model config, in place."""
    if isinstance(node, dict):
        if isinstance(node.get("init_cfg"), dict) and node["init_cfg"].get("type") == "Pretrained":
            node["init_cfg"] = None
        if isinstance(node.get("pretrained"), str):
            node["pretrained"] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, list):
        for value in node:
            _drop_pretrained(value)


def check_strict_fit(model, state_dict, path):
    """Loads ``state_dict`` into ``model`` strictly; ``CheckpointError`` naming the first mismatched keys if not."""
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), state_dict)
    if missing or unexpected or shapes:
        hint = ("; --partial keeps the keys the file lacks at their initialisation" if missing and not shapes
                else "")
        raise CheckpointError(f"{path}: converted weights do not fit {type(model).__name__}: "
                              f"{describe_mismatch(missing, unexpected, shapes)}{hint}")
    model.load_state_dict(state_dict, strict=True)


def check_partial_fit(model, state_dict, path):
    """Loads the keys of ``state_dict`` into ``model`` (the rest keeps its initialisation); ``CheckpointError`` if a
    key is unknown to the model, a shape differs, or nothing fits."""
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), state_dict)
    if unexpected or shapes:
        raise CheckpointError(f"{path}: converted weights do not fit {type(model).__name__}: "
                              f"{describe_mismatch([], unexpected, shapes)}")
    if not state_dict:
        raise CheckpointError(f"{path}: no key of the file fits {type(model).__name__}, nothing to convert")
    model.load_state_dict(state_dict, strict=False)


def convert_checkpoint(src, dst, config=None, unsafe_load=False, partial=False, overrides=None):
    """Converts the official checkpoint ``src`` and writes ``dst``; returns the ``ConversionReport``.

    With ``config`` (and its ``overrides``, ``--a.b value`` tokens) the weights are matched to and strictly loaded
    into that config's model before anything is written; with ``partial`` the model's keys the file lacks may stay
    at their initialisation (listed in the report and in ``meta.left_at_init``).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if config is None and (partial or overrides):
        raise ValueError("--partial and config overrides need --config: the model decides which keys fit")
    official = load_official_checkpoint(src, unsafe_load=unsafe_load)
    model = build_target_model(config, overrides) if config is not None else None
    try:
        state, report = convert_state_dict(official, model.state_dict() if model is not None else None)
    except ValueError as e:
        raise CheckpointError(f"{src}: {e}") from None
    report.partial = partial
    meta = {"converted_from": os.path.abspath(src)}
    if model is not None:
        (check_partial_fit if partial else check_strict_fit)(model, state, src)
    if partial:
        meta["left_at_init"] = list(report.left_at_init)
    meta["notes"] = report.notes()
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buffer)
    atomic_write_bytes(buffer.getvalue(), dst)
    return report
