"""The BEVFormer encoder (VARIANTS.md B.3) for the simulated-LiDAR branch of the SimDistill student: multi-view FPN
features -> BEV on the teacher's grid (B.5).

Learned BEV queries with row/column embeddings go through ``num_layers`` post-norm layers of temporal
self-attention, spatial cross-attention into the cameras and an FFN; the result is transposed to ``[B, C, X, Y]``
and projected to ``out_channels`` so that the rest of the SimDistill student is unchanged.
"""
import torch
from torch import nn

from mmdet3d.registry import MODELS

from .attention import SpatialCrossAttention, TemporalSelfAttention
from .geometry import bev_to_queries, bev_to_xy, lidar2img, pillar_anchors, project_to_cameras, query_reference_2d

__all__ = ["BEVFormerEncoder", "BEVFormerLayer", "LearnedPositionalEncoding"]


class LearnedPositionalEncoding(nn.Module):
    """BEVFormer's (mmcv's) BEV position: channels [0, F) = ``col_embed`` of the x index, [F, 2F) = ``row_embed``
    of the y index; ``forward() -> [bev_h * bev_w, 2F]`` in query order."""

    def __init__(self, num_feats, bev_h, bev_w):
        super().__init__()
        self.row_embed = nn.Embedding(bev_h, num_feats)
        self.col_embed = nn.Embedding(bev_w, num_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self):
        h, f = self.row_embed.weight.shape
        w = self.col_embed.weight.shape[0]
        return torch.cat([self.col_embed.weight[None].expand(h, w, f),
                          self.row_embed.weight[:, None].expand(h, w, f)], -1).flatten(0, 1)


class FFN(nn.Module):
    """Linear, ReLU, Dropout, Linear, Dropout, plus the identity (mmcv's ``FFN`` keys: ``layers.0.0``, ``layers.1``)."""

    def __init__(self, embed_dims, ffn_dims, dropout):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(True), nn.Dropout(dropout)),
                                    nn.Linear(ffn_dims, embed_dims), nn.Dropout(dropout))

    def forward(self, x):
        return x + self.layers(x)


class BEVFormerLayer(nn.Module):
    """q = LN(TSA(q)); q = LN(SCA(q)); q = LN(FFN(q)), the attentions and FFN with their own residuals."""

    def __init__(self, embed_dims, num_heads, num_levels, sca_points, tsa_points, ffn_dims, dropout):
        super().__init__()
        self.attentions = nn.ModuleList([
            TemporalSelfAttention(embed_dims, num_heads, tsa_points, dropout),
            SpatialCrossAttention(embed_dims, num_heads, num_levels, sca_points, dropout)])
        self.ffns = nn.ModuleList([FFN(embed_dims, ffn_dims, dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(self, query, bev_pos, ref_2d, bev_shape, prev_bev, value, spatial_shapes, level_start_index,
                ref_cam, bev_mask, prev_valid=None):
        query = self.norms[0](self.attentions[0](query, bev_pos, ref_2d, bev_shape, prev_bev, prev_valid))
        query = self.norms[1](self.attentions[1](query, value, spatial_shapes, level_start_index, ref_cam, bev_mask))
        return self.norms[2](self.ffns[0](query))


@MODELS.register_module()
class BEVFormerEncoder(nn.Module):
    """Multi-view, multi-level image features -> ``(bev [B, out_channels, X, Y], bev_embed [B, embed_dims, X, Y])``.

    Args:
        bev_h, bev_w: cells along y and along x (BEVFormer's rows and columns); the outputs are
            [B, ·, X = bev_w, Y = bev_h], dim 2 = x (DESIGN §4).
        bev_pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid and the pillars, in the (augmented)
            LiDAR frame; the default puts the cells on the teacher's ±54 m, 0.6 m grid.
        image_size: (H, W) of the network input, which normalises the projected anchors.
        num_points_in_pillar: D anchors per BEV cell; ``sca_points`` must be a multiple of it.
        num_levels, num_cams: the feature levels and cameras of the input (level and camera embeddings).

    ``forward`` takes ``prev_bev`` = a previous frame's ``bev_embed`` already aligned to this frame
    (``align_prev_bev``), and ``prev_valid`` [B] which samples have one; without it temporal self-attention
    attends to the current queries twice. Ego motion
    enters only through that alignment, so there is no CAN-bus MLP: with the all-zero CAN bus of B.5 it adds one
    constant vector to every query, which a checkpoint converter can fold into ``bev_embedding``.
    """

    def __init__(self, embed_dims=256, out_channels=80, bev_h=180, bev_w=180,
                 bev_pc_range=(-54.0, -54.0, -5.0, 54.0, 54.0, 3.0), image_size=(256, 704), num_layers=6,
                 num_heads=8, num_levels=4, num_cams=6, num_points_in_pillar=4, sca_points=8, tsa_points=4,
                 ffn_dims=512, dropout=0.1):
        super().__init__()
        if embed_dims % 2:
            raise ValueError(f"BEVFormerEncoder: embed_dims ({embed_dims}) must be even")
        if sca_points % num_points_in_pillar:
            raise ValueError(f"BEVFormerEncoder: sca_points ({sca_points}) must be a multiple of "
                             f"num_points_in_pillar ({num_points_in_pillar})")
        if len(bev_pc_range) != 6:
            raise ValueError(f"BEVFormerEncoder: bev_pc_range must have 6 numbers, got {list(bev_pc_range)}")
        self.embed_dims, self.bev_h, self.bev_w = embed_dims, bev_h, bev_w
        self.num_levels, self.num_cams = num_levels, num_cams
        self.bev_pc_range = tuple(float(v) for v in bev_pc_range)
        self.image_size = tuple(image_size)
        self.bev_embedding = nn.Embedding(bev_h * bev_w, embed_dims)
        self.positional_encoding = LearnedPositionalEncoding(embed_dims // 2, bev_h, bev_w)
        self.level_embeds = nn.Parameter(torch.empty(num_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)
        self.layers = nn.ModuleList([
            BEVFormerLayer(embed_dims, num_heads, num_levels, sca_points, tsa_points, ffn_dims, dropout)
            for _ in range(num_layers)])
        self.bev_proj = nn.Sequential(nn.Conv2d(embed_dims, out_channels, 1, bias=False),
                                      nn.BatchNorm2d(out_channels), nn.ReLU(True))
        self.register_buffer("ref_2d", query_reference_2d(bev_h, bev_w), persistent=False)
        self.register_buffer("anchors", pillar_anchors(bev_h, bev_w, self.bev_pc_range, num_points_in_pillar),
                             persistent=False)

    def camera_references(self, lidar2image, img_aug_matrix, lidar_aug_matrix):
        """Normalised image coordinates of every pillar anchor ``[B, N, Q, D, 2]`` and the valid-view mask
        ``[B, N, Q, D]``, in float32 whatever the autocast state."""
        with torch.autocast(device_type=lidar2image.device.type, enabled=False):
            matrix = lidar2img(lidar2image.float(), img_aug_matrix.float(), lidar_aug_matrix.float())
            b, n = matrix.shape[:2]
            q, d = self.anchors.shape[:2]
            uv, valid = project_to_cameras(self.anchors.float().flatten(0, 1)[None].expand(b, q * d, 3), matrix,
                                           self.image_size)
        return uv.view(b, n, q, d, 2), valid.view(b, n, q, d)

    def flatten_features(self, mlvl_feats):
        """[B, N, C, h_l, w_l] per level -> value [B * N, S, C] with camera and level embeddings, spatial_shapes
        [L, 2], level_start_index [L]."""
        values, shapes = [], []
        for level, feat in enumerate(mlvl_feats):
            shapes.append(feat.shape[-2:])
            feat = feat.flatten(3).transpose(2, 3)  # [B, N, h*w, C]
            values.append(feat + self.cams_embeds[None, :, None].to(feat.dtype)
                          + self.level_embeds[level].to(feat.dtype))
        value = torch.cat(values, 2).flatten(0, 1)
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=value.device)
        sizes = spatial_shapes.prod(-1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return value, spatial_shapes, level_start_index

    def forward(self, mlvl_feats, lidar2image, img_aug_matrix, lidar_aug_matrix, prev_bev=None, prev_valid=None):
        """mlvl_feats: ``num_levels`` tensors [B, N, C, h_l, w_l]; lidar2image, img_aug_matrix [B, N, 4, 4];
        lidar_aug_matrix [B, 4, 4]; prev_bev [B, C, X, Y] or None; prev_valid [B] bool or None (all valid)."""
        b = self._check_inputs(mlvl_feats, lidar2image, img_aug_matrix, lidar_aug_matrix, prev_bev, prev_valid)
        ref_cam, bev_mask = self.camera_references(lidar2image, img_aug_matrix, lidar_aug_matrix)
        value, spatial_shapes, level_start_index = self.flatten_features(mlvl_feats)
        query = self.bev_embedding.weight[None].expand(b, -1, -1)
        bev_pos = self.positional_encoding()
        prev = None if prev_bev is None else bev_to_queries(prev_bev)
        for layer in self.layers:
            query = layer(query, bev_pos, self.ref_2d, (self.bev_h, self.bev_w), prev, value, spatial_shapes,
                          level_start_index, ref_cam, bev_mask, prev_valid)
        bev_embed = bev_to_xy(query, self.bev_h, self.bev_w)
        return self.bev_proj(bev_embed), bev_embed

    def _check_inputs(self, mlvl_feats, lidar2image, img_aug_matrix, lidar_aug_matrix, prev_bev, prev_valid):
        name = type(self).__name__
        if not isinstance(mlvl_feats, (list, tuple)) or len(mlvl_feats) != self.num_levels:
            raise ValueError(f"{name}: mlvl_feats must be a list of {self.num_levels} feature levels")
        b = mlvl_feats[0].shape[0]
        for level, feat in enumerate(mlvl_feats):
            if feat.dim() != 5 or tuple(feat.shape[:3]) != (b, self.num_cams, self.embed_dims):
                raise ValueError(f"{name}: mlvl_feats[{level}] must be [{b}, {self.num_cams}, {self.embed_dims}, h, w]"
                                 f", got {list(feat.shape)}")
        for key, value, shape in (("lidar2image", lidar2image, (b, self.num_cams, 4, 4)),
                                  ("img_aug_matrix", img_aug_matrix, (b, self.num_cams, 4, 4)),
                                  ("lidar_aug_matrix", lidar_aug_matrix, (b, 4, 4))):
            if value is None:
                raise ValueError(f"{name}: {key} is missing")
            if tuple(value.shape) != shape:
                raise ValueError(f"{name}: {key} must be {list(shape)}, got {list(value.shape)}")
        want = (b, self.embed_dims, self.bev_w, self.bev_h)
        if prev_bev is not None and tuple(prev_bev.shape) != want:
            raise ValueError(f"{name}: prev_bev must be {list(want)} ([B, C, X, Y]), got {list(prev_bev.shape)}")
        if prev_valid is not None and (prev_bev is None or prev_valid.dtype != torch.bool
                                       or tuple(prev_valid.shape) != (b,)):
            raise ValueError(f"{name}: prev_valid must be a [{b}] bool tensor and come with prev_bev, got "
                             f"{prev_valid.dtype} {list(prev_valid.shape)}")
        return b
