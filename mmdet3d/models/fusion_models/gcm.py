"""Geometry compensation module (GCM): single-scale deformable self-attention over a BEV map (REFERENCE §4.2).

Each BEV cell attends to ``num_points`` learned offsets around its own position, so the simulated-LiDAR branch can
move features to where the geometry says they belong. The caller adds the residual.
"""
import math

import torch
from torch import nn

from mmdet3d.ops import multi_scale_deformable_attn
from mmdet3d.ops.msda.msda import multi_scale_deformable_attn_reference
from mmdet3d.registry import MODELS


class LearnedPositionEmbedding(nn.Module):
    """pos[b, :, i, j] = cat(row_embed[j], col_embed[i]) with ``i`` the x (row) index and ``j`` the y index."""

    def __init__(self, bev_h, bev_w, num_feats):
        super().__init__()
        self.row_embed = nn.Embedding(bev_w, num_feats)
        self.col_embed = nn.Embedding(bev_h, num_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, bev_h, bev_w):
        rows = self.row_embed.weight[:bev_w]
        cols = self.col_embed.weight[:bev_h]
        return torch.cat([rows[None].expand(bev_h, -1, -1), cols[:, None].expand(-1, bev_w, -1)], dim=-1)


@MODELS.register_module()
class BEVDeformableAttention(nn.Module):
    """``forward(x [B, C, H, W]) -> [B, C, H, W]`` (without the residual).

    Args:
        corner_reference: place reference points at i/H (the released code, REFERENCE F9) instead of cell centres
            (i + 0.5)/H.
    """

    def __init__(self, channels, bev_h, bev_w, num_heads=8, num_points=20, corner_reference=False):
        super().__init__()
        if channels % 2 or channels % num_heads:
            raise ValueError(f"BEVDeformableAttention: channels ({channels}) must be even and divisible by "
                             f"num_heads ({num_heads})")
        self.channels, self.num_heads, self.num_points = channels, num_heads, num_points
        self.corner_reference = corner_reference
        self.pos = LearnedPositionEmbedding(bev_h, bev_w, channels // 2)
        self.sampling_offsets = nn.Linear(channels, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(channels, num_heads * num_points)
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self):
        # Deformable-DETR's start: zero offsets weights, a polar fan of points per head, uniform attention.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid[:, None, :].repeat(1, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def reference_points(self, h, w, device):
        offset = 0.0 if self.corner_reference else 0.5
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([ref_x, ref_y], -1).view(1, h * w, 1, 1, 1, 2)

    def forward(self, x):
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"BEVDeformableAttention: input has {c} channels, expected {self.channels}")
        src = x.flatten(2).transpose(1, 2).float()
        query = src + self.pos(h, w).reshape(1, h * w, c).to(src.dtype)
        value = self.value_proj(src).view(b, h * w, self.num_heads, c // self.num_heads)
        offsets = self.sampling_offsets(query).view(b, h * w, self.num_heads, 1, self.num_points, 2)
        weights = self.attention_weights(query).view(b, h * w, self.num_heads, self.num_points).softmax(-1)
        normaliser = torch.tensor([w, h], dtype=src.dtype, device=x.device)
        locations = self.reference_points(h, w, x.device) + offsets / normaliser
        weights = weights.view(b, h * w, self.num_heads, 1, self.num_points)
        if torch.compiler.is_exporting():
            # The dispatcher reads the map shapes back from tensors, which a traced graph cannot do; an exported
            # graph takes the grid_sample path (a standard ONNX GridSample) anyway.
            out = multi_scale_deformable_attn_reference(value, [(h, w)], locations, weights)
        else:
            shapes = torch.tensor([[h, w]], dtype=torch.long, device=x.device)
            start = torch.zeros(1, dtype=torch.long, device=x.device)
            out = multi_scale_deformable_attn(value, shapes, start, locations, weights)
        out = self.output_proj(out)
        return out.transpose(1, 2).reshape(b, c, h, w).to(x.dtype)
