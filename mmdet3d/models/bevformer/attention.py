"""BEVFormer's attentions (VARIANTS.md B.3 items 8-9) on our ``multi_scale_deformable_attn``.

Submodule names follow the released BEVFormer (``sampling_offsets``, ``deformable_attention``, ...), so its
checkpoints load with a prefix map. Unlike the release, every sample reads only its own previous BEV in temporal
self-attention and its own visible queries per camera in spatial cross-attention (B.2 item 12).
"""
import math

import torch
from torch import nn

from mmdet3d.ops import multi_scale_deformable_attn

__all__ = ["MSDeformableAttention3D", "SpatialCrossAttention", "TemporalSelfAttention"]


def _init_deformable(sampling_offsets, attention_weights, num_heads, groups, num_points):
    """Deformable-DETR's start: offsets independent of the query, point k of head h at distance k + 1 in the
    direction h * 2 pi / heads (for each of ``groups`` levels or frames); uniform attention."""
    nn.init.zeros_(sampling_offsets.weight)
    angles = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    fan = torch.stack([angles.cos(), angles.sin()], -1)
    fan = fan / fan.abs().max(-1, keepdim=True)[0]
    fan = fan[:, None, None, :] * torch.arange(1, num_points + 1, dtype=torch.float32)[None, None, :, None]
    with torch.no_grad():
        sampling_offsets.bias.copy_(fan.expand(num_heads, groups, num_points, 2).flatten())
    nn.init.zeros_(attention_weights.weight)
    nn.init.zeros_(attention_weights.bias)


def _xavier(linear):
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


def _check_dims(embed_dims, num_heads, owner):
    if embed_dims % num_heads:
        raise ValueError(f"{owner}: embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})")


class TemporalSelfAttention(nn.Module):
    """Deformable self-attention of the BEV queries over two frames, [previous BEV, current queries].

    Each query samples ``num_points`` points per head in each frame around its own cell (the previous BEV is
    already aligned to the current grid, so both frames share the reference points); the two frames are averaged.
    Without a previous BEV the current queries stand in for it, as BEVFormer does on a scene's first frame.
    """

    num_frames = 2

    def __init__(self, embed_dims=256, num_heads=8, num_points=4, dropout=0.1):
        super().__init__()
        _check_dims(embed_dims, num_heads, type(self).__name__)
        self.num_heads, self.num_points = num_heads, num_points
        # offsets and weights read [previous BEV, query + pos]
        self.sampling_offsets = nn.Linear(2 * embed_dims, num_heads * self.num_frames * num_points * 2)
        self.attention_weights = nn.Linear(2 * embed_dims, num_heads * self.num_frames * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        _init_deformable(self.sampling_offsets, self.attention_weights, num_heads, self.num_frames, num_points)
        _xavier(self.value_proj)
        _xavier(self.output_proj)

    def forward(self, query, query_pos, reference_points, bev_shape, prev_bev=None, prev_valid=None):
        """query, prev_bev [B, Q, C]; query_pos [Q, C]; reference_points [Q, 2] normalised (x, y);
        bev_shape (bev_h, bev_w); prev_valid [B] bool (None: all valid) -> [B, Q, C] (with the residual)."""
        b, q, c = query.shape
        heads, frames, points = self.num_heads, self.num_frames, self.num_points
        prev = query if prev_bev is None else prev_bev
        if prev_bev is not None and prev_valid is not None:
            # a sample whose previous frame is missing (first of its scene) attends as if it had none
            prev = torch.where(prev_valid[:, None, None], prev_bev, query)
        value = self.value_proj(torch.stack([prev, query], 1)).view(b * frames, q, heads, c // heads)
        mixed = torch.cat([prev, query + query_pos], -1)
        offsets = self.sampling_offsets(mixed).view(b, q, heads, frames, 1, points, 2)
        offsets = offsets.permute(0, 3, 1, 2, 4, 5, 6).flatten(0, 1)  # [B * frames, Q, heads, 1, P, 2]
        weights = self.attention_weights(mixed).view(b, q, heads, frames, points).softmax(-1)
        weights = weights.permute(0, 3, 1, 2, 4).flatten(0, 1)[:, :, :, None]  # [B * frames, Q, heads, 1, P]
        bev_h, bev_w = bev_shape
        locations = reference_points[None, :, None, None, None, :] + offsets / offsets.new_tensor([bev_w, bev_h])
        shapes = torch.tensor([[bev_h, bev_w]], dtype=torch.long, device=query.device)
        start = torch.zeros(1, dtype=torch.long, device=query.device)
        out = multi_scale_deformable_attn(value, shapes, start, locations, weights)
        out = out.view(b, frames, q, c).mean(1)
        return self.dropout(self.output_proj(out)) + query


class MSDeformableAttention3D(nn.Module):
    """Deformable attention of ``M`` query sets over their multi-level image features, with D anchors per query:
    point p samples around anchor ``p mod D`` (BEVFormer's layout). No output projection: the caller's."""

    def __init__(self, embed_dims=256, num_heads=8, num_levels=4, num_points=8):
        super().__init__()
        _check_dims(embed_dims, num_heads, type(self).__name__)
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        _init_deformable(self.sampling_offsets, self.attention_weights, num_heads, num_levels, num_points)
        _xavier(self.value_proj)

    def forward(self, query, value, spatial_shapes, level_start_index, reference_points):
        """query [M, K, C]; value [M, S, C]; spatial_shapes [L, 2] (h, w); level_start_index [L];
        reference_points [M, K, D, 2] normalised image coordinates -> [M, K, C]."""
        m, k, c = query.shape
        anchors = reference_points.shape[2]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(m, value.shape[1], heads, c // heads)
        offsets = self.sampling_offsets(query).view(m, k, heads, levels, points, 2)
        offsets = offsets / spatial_shapes.flip(-1).to(offsets)[None, None, None, :, None, :]
        weights = self.attention_weights(query).view(m, k, heads, levels * points).softmax(-1)
        weights = weights.view(m, k, heads, levels, points)
        offsets = offsets.view(m, k, heads, levels, points // anchors, anchors, 2)
        locations = reference_points[:, :, None, None, None] + offsets
        return multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                           locations.flatten(4, 5), weights)


class SpatialCrossAttention(nn.Module):
    """Each BEV query attends, in every camera that sees one of its anchors, to that camera's features; the sum
    over cameras is divided by the number of those cameras (at least 1), projected, and added to the query."""

    def __init__(self, embed_dims=256, num_heads=8, num_levels=4, num_points=8, dropout=0.1):
        super().__init__()
        self.deformable_attention = MSDeformableAttention3D(embed_dims, num_heads, num_levels, num_points)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        _xavier(self.output_proj)

    def forward(self, query, value, spatial_shapes, level_start_index, reference_points, bev_mask):
        """query [B, Q, C]; value [B * N, S, C] (sample-major); reference_points [B, N, Q, D, 2];
        bev_mask [B, N, Q, D] (anchor seen by the camera) -> [B, Q, C] (with the residual)."""
        b, n, q, anchors, _ = reference_points.shape
        c = query.shape[-1]
        seen = bev_mask.any(-1)  # [B, N, Q]
        counts = seen.sum(-1)
        slots = max(int(counts.max()), 1)
        # Pack, per sample and camera, the queries that camera sees (stable sort: in query order), padded to the
        # longest list; the attention then runs on [B * N, slots] instead of all B * N * Q pairs.
        order = torch.sort((~seen).to(torch.uint8), dim=-1, stable=True)[1][..., :slots]  # [B, N, slots]
        filled = torch.arange(slots, device=query.device) < counts[..., None]
        packed_query = torch.gather(query[:, None].expand(b, n, q, c), 2, order[..., None].expand(b, n, slots, c))
        packed_ref = torch.gather(reference_points, 2,
                                  order[..., None, None].expand(b, n, slots, anchors, 2))
        out = self.deformable_attention(packed_query.flatten(0, 1), value, spatial_shapes, level_start_index,
                                        packed_ref.flatten(0, 1))
        out = out.view(b, n, slots, c) * filled[..., None].to(out.dtype)
        total = out.new_zeros(b, q, c).scatter_add_(1, order.flatten(1)[..., None].expand(b, n * slots, c),
                                                   out.flatten(1, 2))
        total = total / seen.sum(1).clamp(min=1)[..., None].to(total.dtype)
        return self.dropout(self.output_proj(total)) + query
