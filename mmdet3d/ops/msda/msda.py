"""Multi-scale deformable attention core (Deformable-DETR): ``grid_sample`` in PyTorch, Triton kernels on GPU."""
import functools
import os

import torch
import torch.nn.functional as F

from mmdet3d.ops.common import FORCE_REFERENCE_ENV

__all__ = ["multi_scale_deformable_attn"]


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if value.dim() != 4:
        raise ValueError(f"multi_scale_deformable_attn: value must be [B, S, heads, Dh], got {tuple(value.shape)}")
    B, S, heads, _ = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"multi_scale_deformable_attn: spatial_shapes must be [L, 2], got "
                         f"{tuple(spatial_shapes.shape)}")
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(f"multi_scale_deformable_attn: level_start_index must be [{L}], got "
                         f"{tuple(level_start_index.shape)}")
    loc = sampling_locations.shape
    if len(loc) != 6 or loc[0] != B or loc[2] != heads or loc[3] != L or loc[5] != 2:
        raise ValueError(f"multi_scale_deformable_attn: sampling_locations must be [{B}, Q, {heads}, {L}, P, 2], "
                         f"got {tuple(loc)}")
    if tuple(attention_weights.shape) != tuple(loc[:5]):
        raise ValueError(f"multi_scale_deformable_attn: attention_weights must be {list(loc[:5])}, got "
                         f"{list(attention_weights.shape)}")
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    expected = [sum(h * w for h, w in shapes[:i]) for i in range(L)]
    if starts != expected or sum(h * w for h, w in shapes) != S:
        raise ValueError(f"multi_scale_deformable_attn: value has {S} tokens, spatial_shapes {shapes} and "
                         f"level_start_index {starts} do not tile it")
    return shapes


@functools.lru_cache(maxsize=None)
def _triton_kernel():
    """The Triton implementation, or None where Triton is not installed."""
    try:
        from .msda_triton import multi_scale_deformable_attn_triton
    except ImportError:
        return None
    return multi_scale_deformable_attn_triton


def use_triton(*tensors):
    """Triton runs when every input is on a CUDA device, Triton imports and the reference path is not forced, and
    each input has fewer than 2**31 elements (the kernels index with int32)."""
    return (os.environ.get(FORCE_REFERENCE_ENV, "0") != "1" and all(t.is_cuda for t in tensors)
            and all(t.numel() < 2 ** 31 for t in tensors) and _triton_kernel() is not None)


def multi_scale_deformable_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Deformable attention: ``value[B, S, heads, Dh]`` holds ``L`` flattened maps (``spatial_shapes[L, 2]`` =
    (H, W), row-major, starting at ``level_start_index``); each query samples ``P`` points per head and level at
    ``sampling_locations[B, Q, heads, L, P, 2]`` in [0, 1] (x = column; pixel centres at ``(i + 0.5) / W``)
    bilinearly with zero padding and sums them with ``attention_weights[B, Q, heads, L, P]``:
    ``-> [B, Q, heads * Dh]``."""
    shapes = _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if use_triton(value, sampling_locations, attention_weights):
        return _triton_kernel()(value, spatial_shapes.to(value.device), level_start_index.to(value.device),
                                sampling_locations, attention_weights)
    return multi_scale_deformable_attn_reference(value, shapes, sampling_locations, attention_weights)


def multi_scale_deformable_attn_reference(value, shapes, sampling_locations, attention_weights):
    """The PyTorch path: one ``grid_sample`` per level; ``shapes`` = [(H, W), ...]."""
    B, _, heads, Dh = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample with align_corners=False maps -1 / +1 to the outer edges of the map, so 2 * loc - 1 puts
    # pixel i's centre at (i + 0.5) / W, as Deformable-DETR's kernel does.
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(B * heads, Dh, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*heads, Q, P, 2]
        sampled.append(F.grid_sample(v, g.to(v.dtype), mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(B * heads, 1, Q, L * P)
    sampled = sampled[0] if L == 1 else torch.cat(sampled, dim=-1)  # [B*heads, Dh, Q, L*P]
    out = (sampled * weights.to(value.dtype)).sum(-1)
    return out.view(B, heads * Dh, Q).transpose(1, 2).contiguous()
