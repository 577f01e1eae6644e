"""Loading a backbone's weights from a local checkpoint file."""
import os

import torch
from mmengine.logging import print_log

__all__ = ["pretrained_path", "load_backbone_state"]


def pretrained_path(pretrained, init_cfg, owner):
    """The checkpoint path given either as ``pretrained`` or as ``init_cfg=dict(type="Pretrained", checkpoint=...)``."""
    if pretrained is not None and init_cfg is not None:
        raise ValueError(f"{owner}: give either pretrained or init_cfg, not both")
    if init_cfg is None:
        return pretrained
    if init_cfg.get("type") != "Pretrained" or "checkpoint" not in init_cfg:
        raise ValueError(f"{owner}: init_cfg must be dict(type='Pretrained', checkpoint=PATH), got {init_cfg!r}")
    return init_cfg["checkpoint"]


def load_backbone_state(module, path, convert=None):
    """Load ``path`` into ``module``: full-detector checkpoints keep only their ``backbone.`` keys.

    ``convert`` optionally maps the state dict (e.g. original Swin -> mmdet names) before loading. Missing or
    unexpected keys are reported, not fatal, as mmdet does for pretrained backbones.
    """
    if "://" in str(path):
        raise ValueError(f"{type(module).__name__}: pretrained checkpoint must be a local file, got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{type(module).__name__}: pretrained checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt
    for key in ("state_dict", "model"):
        if isinstance(ckpt, dict) and key in ckpt:
            state = ckpt[key]
            break
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if convert is not None:
        state = convert(state)
    own = module.state_dict()
    if not any(k in own and tuple(v.shape) == tuple(own[k].shape) for k, v in state.items()):
        raise ValueError(f"{type(module).__name__}: {path} holds no weights of this backbone (no key with a matching "
                         f"name and shape; is it a checkpoint of another architecture?)")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        print_log(f"{type(module).__name__} from {path}: missing keys {result.missing_keys}, "
                  f"unexpected keys {result.unexpected_keys}", logger="current", level=30)
    return result
