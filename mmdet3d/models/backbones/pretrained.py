"""Loading a backbone's weights from a local checkpoint file.

What a pretrained file may be: a bare state dict, an mmengine/mmcv checkpoint (``state_dict``) or an original-Swin
one (``model``), or another entry a backbone names first (ViTAE's ``state_dict_ema``), of the backbone alone or of a
whole detector (only its ``backbone.*`` keys are kept; a DDP ``module.`` prefix is stripped). Every failure is a
one-line error naming the file; keys the backbone lacks or the file lacks are reported in one warning line.
"""
import os

import torch
from mmengine.logging import print_log

from mmdet3d.utils.checkpoint import (CheckpointError, compare_state_dicts, describe_mismatch,
                                      read_checkpoint)

__all__ = ["pretrained_path", "load_backbone_state", "read_backbone_weights"]


def pretrained_path(pretrained, init_cfg, owner):
    """The checkpoint path given either as ``pretrained`` or as ``init_cfg=dict(type="Pretrained", checkpoint=...)``."""
    if pretrained is not None and init_cfg is not None:
        raise ValueError(f"{owner}: give either pretrained or init_cfg, not both")
    if init_cfg is None:
        return pretrained
    if init_cfg.get("type") != "Pretrained" or "checkpoint" not in init_cfg:
        raise ValueError(f"{owner}: init_cfg must be dict(type='Pretrained', checkpoint=PATH), got {init_cfg!r}")
    return init_cfg["checkpoint"]


def read_backbone_weights(path, owner, entries=("state_dict", "model")):
    """``{key: tensor}`` of the backbone in ``path`` (weights-only loading): the first of ``entries`` the checkpoint
    holds, else the checkpoint itself; ``ValueError`` in one line if none."""
    if "://" in str(path):
        raise ValueError(f"{owner}: pretrained checkpoint must be a local file, got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{owner}: pretrained checkpoint not found: {path}")
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        hint = ""
        if "refused by weights-only loading" in str(e):
            hint = (" (if you trust the file, `python tools/convert_checkpoint.py --unsafe-load IN OUT` re-saves its "
                    "weights alone)")
        raise ValueError(f"{owner}: pretrained {e}{hint}") from None
    state = ckpt
    for key in entries:
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    tensors = isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors:
        top = sorted(map(str, ckpt))[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{owner}: {path} holds no state dict of tensors (top level: {top})")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def load_backbone_state(module, path, convert=None, required=None, owner=None, entries=("state_dict", "model")):
    """Load ``path`` into ``module``: full-detector checkpoints keep only their ``backbone.`` keys.

    ``convert`` optionally maps the state dict (e.g. original Swin -> mmdet names) before loading. ``required(key)``
    names the keys that define the architecture: a file that lacks one of the module's, or holds one the module does
    not have, is a checkpoint of another architecture or size and an error. Other missing or unexpected keys are
    reported in one line, not fatal, as mmdet does for pretrained backbones. Any tensor of another shape is an error.
    ``owner`` names the backbone in messages (default: its class name); ``entries`` as in ``read_backbone_weights``.
    """
    owner = owner or type(module).__name__
    state = read_backbone_weights(path, owner, entries)
    if convert is not None:
        state = convert(state)
    own = module.state_dict()
    missing, unexpected, shapes = compare_state_dicts(own, state)
    if not any(k in own and tuple(v.shape) == tuple(own[k].shape) for k, v in state.items()):
        raise ValueError(f"{owner}: {path} holds no weights of this backbone (no key with a matching name and shape; "
                         f"is it a checkpoint of another architecture?): "
                         f"{describe_mismatch(missing, unexpected, shapes)}")
    if shapes:
        raise ValueError(f"{owner}: {path} is a checkpoint of another size or architecture: "
                         f"{describe_mismatch([], [], shapes)}")
    if required is not None:
        lacking = [k for k in missing if required(k)]
        extra = [k for k in unexpected if required(k)]
        if lacking or extra:
            raise ValueError(f"{owner}: {path} is a checkpoint of another architecture or depth: "
                             f"{describe_mismatch(lacking, extra, [])}")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        print_log(f"{owner} from {path}: {describe_mismatch(result.missing_keys, result.unexpected_keys, [])}",
                  logger="current", level=30)
    return result
