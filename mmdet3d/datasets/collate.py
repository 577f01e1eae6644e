"""Batch collation of ``Collect3D`` samples (``docs/conventions.md``).

Registered in mmengine's FUNCTIONS registry as ``simdistill_collate`` so a runner dataloader config can name it:
``collate_fn=dict(type="simdistill_collate")``.
"""
import torch
from mmengine.registry import FUNCTIONS

# Per-sample sizes differ: kept as lists of length B.
LIST_KEYS = ("points", "gt_bboxes_3d", "gt_labels_3d", "metas")


def collate(batch):
    """Stacks tensors (``img`` -> ``[B, N, 3, H, W]``, matrices -> ``[B, N, 4, 4]`` / ``[B, 4, 4]``); keeps
    ``points``, ``gt_bboxes_3d``, ``gt_labels_3d``, ``metas`` and any non-tensor value as lists."""
    if not batch:
        raise ValueError("collate: empty batch")
    keys = list(batch[0])
    for i, sample in enumerate(batch):
        if set(sample) != set(keys):
            raise ValueError(f"collate: sample {i} has keys {sorted(sample)}, sample 0 has {sorted(keys)}")
    out = {}
    for key in keys:
        values = [sample[key] for sample in batch]
        if key in LIST_KEYS or not all(isinstance(v, torch.Tensor) for v in values):
            out[key] = values
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"collate: '{key}' has different shapes across the batch: {sorted(shapes)}")
        out[key] = torch.stack(values)
    return out


FUNCTIONS.register_module(name="simdistill_collate", module=collate, force=True)


def to_device(batch, device):
    """Moves the tensors of a collated batch (also inside lists) to ``device``; metas stay where they are."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    return {key: move(value) for key, value in batch.items()}
