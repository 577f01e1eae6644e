"""ViTAEv2 backbone (Zhang et al., IJCV 2023) with the module layout and state-dict key names of ViTAE's released code.

Each stage is a reduction cell (``layers.{i}.RC``) followed by normal cells (``layers.{i}.NC.{j}``):

* reduction cell: a pyramid of dilated strided convolutions (``PRM``, concatenated per dilation) feeds a token
  attention (window or global, ``RC.attn``) that maps it to the stage width; a parallel convolution branch (``PCM``)
  on the cell's un-normalised input is added, then an MLP with a residual. There is no input residual.
* normal cell: LayerNorm -> attention (window or global) and, in parallel, a grouped convolution branch on the
  un-normalised tokens, both added to the input; then LayerNorm -> MLP with a residual.

Window attention pads the token map with zeros around its centre to multiples of the window (as the original) and
crops the result; padded tokens act as keys. A reduction cell zero-pads its input at the bottom/right to a multiple
of its stride, so any input size works (the original asserts instead; at the sizes it accepts nothing is padded).
The stages in ``out_indices`` are LayerNorm-ed (``norm{i}``, SimDistill's addition) and returned as [B, C, H, W].
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmdet3d.registry import MODELS

from .pretrained import load_backbone_state, pretrained_path
from .swin import DropPath, window_partition, window_reverse

__all__ = ["ViTAEv2", "convert_vitaev2_classifier", "drop_path_rates"]

TOKEN_TYPES = ("window", "transformer")
# timm's training script saves the EMA weights next to the raw ones; ViTAE reports the EMA model.
EMA_ENTRIES = ("state_dict_ema", "state_dict", "model")
RAW_ENTRIES = ("state_dict", "model")


def drop_path_rates(depths, max_rate, official=False):
    """Per-stage stochastic depth rates of the normal cells, linear from 0 to ``max_rate`` over all of them.

    ``official`` reproduces the released code, which starts stage ``i``'s slice at ``depths[i - 1]`` instead of at
    the cumulative depth: for ViTAEv2-S stages 1 and 2 both start at the third rate and the largest rate is 0.138.
    """
    rates = torch.linspace(0, max_rate, sum(depths)).tolist()
    starts = [depths[i - 1] if i else 0 for i in range(len(depths))] if official else \
        [sum(depths[:i]) for i in range(len(depths))]
    return [rates[start:start + depth] for start, depth in zip(starts, depths)]


def map_to_tokens(x):
    """[B, C, H, W] -> ([B, H*W, C], (H, W))."""
    return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def tokens_to_map(x, hw):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)


def pad_to_stride(x, stride):
    """Zero-pad a [B, C, H, W] map at the bottom/right to multiples of ``stride``."""
    pad_h, pad_w = -x.shape[2] % stride, -x.shape[3] % stride
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def window_attend(attn, x, hw, window):
    """``attn`` inside each ``window`` x ``window`` window of the token map x [B, H*W, C_in] -> [B, H*W, C_out].

    The map is zero-padded around its centre (the odd pixel at the bottom/right) and cropped back afterwards."""
    b, _, c = x.shape
    h, w = hw
    pad_h, pad_w = -h % window, -w % window
    top, left = pad_h // 2, pad_w // 2
    x = F.pad(x.view(b, h, w, c), (0, 0, left, pad_w - left, top, pad_h - top))
    out = window_reverse(attn(window_partition(x, window)), window, h + pad_h, w + pad_w)
    return out[:, top:top + h, left:left + w].reshape(b, h * w, -1)


def conv_branch(channels, strides, groups):
    """The parallel convolution module (PCM): three grouped 3x3 convs ``channels[0] -> ... -> channels[3]``, with
    BatchNorm + SiLU after the first two."""
    layers = []
    for k in range(3):
        layers.append(nn.Conv2d(channels[k], channels[k + 1], 3, strides[k], 1, groups=groups))
        if k < 2:
            layers += [nn.BatchNorm2d(channels[k + 1]), nn.SiLU(inplace=True)]
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head self-attention from ``in_dims`` to ``out_dims`` channels, scale (out_dims / heads)^-0.5.

    ``value_skip`` adds the values to the output: the residual of T2T's token transformer, whose input is wider than
    its output."""

    def __init__(self, in_dims, out_dims, num_heads, qkv_bias, attn_drop_rate, proj_drop_rate, value_skip=False):
        super().__init__()
        if out_dims % num_heads:
            raise ValueError(f"ViTAEv2: {out_dims} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.attn_drop_rate = attn_drop_rate
        self.value_skip = value_skip
        self.qkv = nn.Linear(in_dims, 3 * out_dims, bias=qkv_bias)
        self.proj = nn.Linear(out_dims, out_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop_rate if self.training else 0.0)
        y = self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, -1)))
        if self.value_skip:
            y = y + v.transpose(1, 2).reshape(b, n, -1)
        return y


class Mlp(nn.Module):
    def __init__(self, dims, hidden_dims, drop_rate):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TokenBlock(nn.Module):
    """LayerNorm -> attention (``window`` > 0: inside windows, 0: global) and LayerNorm -> MLP, without residuals:
    the cells combine them."""

    def __init__(self, in_dims, out_dims, num_heads, mlp_ratio, qkv_bias, window, eps, drop_rate, attn_drop_rate,
                 value_skip=False):
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(in_dims, eps=eps)
        self.attn = Attention(in_dims, out_dims, num_heads, qkv_bias, attn_drop_rate, drop_rate, value_skip)
        self.norm2 = nn.LayerNorm(out_dims, eps=eps)
        self.mlp = Mlp(out_dims, int(out_dims * mlp_ratio), drop_rate)

    def attend(self, x, hw):
        x = self.norm1(x)
        return window_attend(self.attn, x, hw, self.window) if self.window else self.attn(x)

    def feed_forward(self, x):
        return self.mlp(self.norm2(x))


class PyramidReduction(nn.Module):
    """PRM: one strided, dilated conv + GELU per dilation, concatenated (channel = dilation index * embed + c)."""

    def __init__(self, in_channels, embed_dims, kernel_size, stride, dilations):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, embed_dims, kernel_size, stride,
                                    padding=math.ceil(((kernel_size - 1) * d + 1 - stride) / 2), dilation=d),
                          nn.GELU())
            for d in dilations)

    def forward(self, x):
        return map_to_tokens(torch.cat([conv(x) for conv in self.convs], dim=1))


def reduction_conv_strides(stride):
    """Strides of the reduction cell's three PCM convs: 4 -> (2, 2, 1), 2 -> (2, 1, 1)."""
    return tuple(2 if stride >> (k + 1) else 1 for k in range(3))


class ReductionCell(nn.Module):
    """Downsamples by ``stride`` and widens to ``token_dims``. Window type: window attention with qkv bias; transformer
    type: global attention without qkv bias and with the value skip. Its LayerNorms keep PyTorch's eps (1e-5) and
    its drop path is off, as in the original."""

    def __init__(self, in_channels, embed_dims, token_dims, stride, kernel_size, dilations, num_heads, groups,
                 tokens_type, window_size, drop_rate, attn_drop_rate, mlp_ratio=1.0):
        super().__init__()
        if stride not in (2, 4, 8):
            raise ValueError(f"ViTAEv2: downsample ratio must be 2, 4 or 8, got {stride}")
        self.stride = stride
        windowed = tokens_type == "window"
        self.PRM = PyramidReduction(in_channels, embed_dims, kernel_size, stride, dilations)
        self.PCM = conv_branch((in_channels, embed_dims, embed_dims, token_dims), reduction_conv_strides(stride),
                               groups)
        self.attn = TokenBlock(len(dilations) * embed_dims, token_dims, num_heads, mlp_ratio, qkv_bias=windowed,
                               window=window_size if windowed else 0, eps=1e-5, drop_rate=drop_rate,
                               attn_drop_rate=attn_drop_rate, value_skip=not windowed)

    def forward(self, x):
        """x [B, C, H, W] -> tokens [B, H/s * W/s, token_dims], (H/s, W/s)."""
        x = pad_to_stride(x, self.stride)
        tokens, hw = self.PRM(x)
        y = self.attn.attend(tokens, hw) + map_to_tokens(self.PCM(x))[0]
        return y + self.attn.feed_forward(y), hw


class NormalCell(TokenBlock):
    """x + DropPath(attention(LN x)) + DropPath(PCM(x)), then + DropPath(MLP(LN x)); independent drop masks."""

    def __init__(self, dims, num_heads, mlp_ratio, qkv_bias, groups, window, drop_rate, attn_drop_rate,
                 drop_path_rate):
        super().__init__(dims, dims, num_heads, mlp_ratio, qkv_bias, window, eps=1e-6, drop_rate=drop_rate,
                         attn_drop_rate=attn_drop_rate)
        self.PCM = conv_branch((dims, int(dims * mlp_ratio), dims, dims), (1, 1, 1), groups)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x, hw):
        conv = map_to_tokens(self.PCM(tokens_to_map(x, hw)))[0]
        x = x + self.drop_path(self.attend(x, hw)) + self.drop_path(conv)
        return x + self.drop_path(self.feed_forward(x))


class ViTAEv2Stage(nn.Module):
    """A reduction cell and ``len(drop_path_rates)`` normal cells (``RC``, ``NC`` as the original's BasicLayer)."""

    def __init__(self, in_channels, embed_dims, token_dims, stride, kernel_size, dilations, RC_heads, NC_heads,
                 RC_group, NC_group, RC_tokens_type, NC_tokens_type, window_size, mlp_ratio, qkv_bias, drop_rate,
                 attn_drop_rate, drop_path_rates, use_checkpoint):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.RC = ReductionCell(in_channels, embed_dims, token_dims, stride, kernel_size, dilations, RC_heads,
                                RC_group, RC_tokens_type, window_size, drop_rate, attn_drop_rate)
        window = window_size if NC_tokens_type == "window" else 0
        self.NC = nn.ModuleList(
            NormalCell(token_dims, NC_heads, mlp_ratio, qkv_bias, NC_group, window, drop_rate, attn_drop_rate, rate)
            for rate in drop_path_rates)

    def forward(self, x):
        x, hw = self.RC(x)
        for cell in self.NC:
            if self.use_checkpoint and x.requires_grad:
                # as the original: a recomputed cell updates its BatchNorm statistics a second time
                x = checkpoint(cell, x, hw, use_reentrant=False)
            else:
                x = cell(x, hw)
        return x, hw


@MODELS.register_module()
class ViTAEv2(nn.Module):
    """ViTAEv2 returning the LayerNorm-ed outputs of ``out_indices`` as [B, C, H, W]; the defaults are ViTAEv2-S.

    Stage ``i`` has ``token_dims[i]`` channels at stride ``prod(downsample_ratios[:i + 1])``. Argument names are the
    original's. ``drop_path_rate`` rises linearly over all normal cells; the released code mis-slices that schedule
    (stage ``i`` starts at rate index ``NC_depth[i - 1]``, so ViTAEv2-S tops out at 0.138 instead of 0.2):
    ``official_drop_path=True`` reproduces it. ``frozen_stages=k`` freezes stages ``0..k-1`` (parameters and
    BatchNorm statistics; the output norms stay trainable, no ViTAE checkpoint has them); -1 or 0 freezes none.
    ``use_checkpoint`` recomputes each normal cell in the backward pass to save memory.

    ``pretrained`` (or ``init_cfg=dict(type="Pretrained", checkpoint=PATH)``) names a local checkpoint loaded at
    construction, e.g. ViTAE's ImageNet-1k ViTAEv2-S: see :meth:`init_weights`.
    """

    def __init__(self, in_chans=3, embed_dims=(64, 64, 128, 256), token_dims=(64, 128, 256, 512),
                 downsample_ratios=(4, 2, 2, 2), kernel_size=(7, 3, 3, 3),
                 dilations=((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2)),
                 RC_tokens_type=("window", "window", "transformer", "transformer"),
                 NC_tokens_type=("window", "window", "transformer", "transformer"), RC_heads=(1, 1, 2, 4),
                 NC_heads=(1, 2, 4, 8), RC_group=(1, 16, 32, 64), NC_group=(1, 32, 64, 128), NC_depth=(2, 2, 8, 2),
                 mlp_ratio=4.0, qkv_bias=True, window_size=7, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.2,
                 official_drop_path=False, out_indices=(1, 2, 3), frozen_stages=-1, use_checkpoint=False,
                 load_ema=True, pretrained=None, init_cfg=None):
        super().__init__()
        per_stage = dict(embed_dims=embed_dims, token_dims=token_dims, downsample_ratios=downsample_ratios,
                         kernel_size=kernel_size, dilations=dilations, RC_tokens_type=RC_tokens_type,
                         NC_tokens_type=NC_tokens_type, RC_heads=RC_heads, NC_heads=NC_heads, RC_group=RC_group,
                         NC_group=NC_group, NC_depth=NC_depth)
        num_stages = len(token_dims)
        lengths = {name: len(value) for name, value in per_stage.items()}
        if set(lengths.values()) != {num_stages}:
            raise ValueError(f"ViTAEv2: per-stage arguments differ in length: {lengths}")
        types = set(RC_tokens_type) | set(NC_tokens_type)
        if not types <= set(TOKEN_TYPES):
            raise ValueError(f"ViTAEv2: token types must be among {TOKEN_TYPES}, got {sorted(types)}")
        if any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f"ViTAEv2: out_indices {out_indices} outside 0..{num_stages - 1}")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"ViTAEv2: frozen_stages must be in -1..{num_stages}, got {frozen_stages}")
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.load_ema = load_ema
        self.arch = f"ViTAEv2(token_dims={list(token_dims)}, NC_depth={list(NC_depth)})"
        self.pretrained = pretrained_path(pretrained, init_cfg, "ViTAEv2")
        rates = drop_path_rates(list(NC_depth), drop_path_rate, official=official_drop_path)
        channels = [in_chans] + list(token_dims)
        self.layers = nn.ModuleList(
            ViTAEv2Stage(channels[i], embed_dims[i], token_dims[i], downsample_ratios[i], kernel_size[i], dilations[i],
                         RC_heads[i], NC_heads[i], RC_group[i], NC_group[i], RC_tokens_type[i], NC_tokens_type[i],
                         window_size, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[i], use_checkpoint)
            for i in range(num_stages))
        self.num_features = list(token_dims)
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(token_dims[i], eps=1e-6))
        self._init_random()
        # At construction, not only through init_weights: mmengine's recursive init stops at the ModuleDicts that
        # hold the encoders, so a detector would otherwise keep a random backbone without a word.
        self.init_weights()
        self._freeze()

    def _init_random(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self):
        """Load the configured pretrained checkpoint, if any.

        Weights are taken from ``state_dict_ema`` when present and ``load_ema`` is set, else from ``state_dict`` or
        ``model``; ``module.`` is stripped and a detector checkpoint keeps its ``backbone.*`` keys. The classifier
        (``head.*``) and the ``relative_position_index`` buffers of ViTAE's classification code are dropped. Every
        ``layers.*`` tensor must be present with this model's shape and none may be extra (else a one-line error:
        another size or architecture); anything else missing (the output norms) or unexpected is reported in one
        line.
        """
        if self.pretrained is not None:
            load_backbone_state(self, self.pretrained, convert=convert_vitaev2_classifier,
                                required=lambda key: key.startswith("layers."), owner=self.arch,
                                entries=EMA_ENTRIES if self.load_ema else RAW_ENTRIES)

    def _freeze(self):
        for stage in self.layers[:max(self.frozen_stages, 0)]:
            stage.eval()
            for p in stage.parameters():
                p.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze()
        return self

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.layers):
            tokens, hw = stage(x)
            x = tokens_to_map(tokens, hw)
            if i in self.out_indices:
                outs.append(tokens_to_map(getattr(self, f"norm{i}")(tokens), hw).contiguous())
        return outs


def convert_vitaev2_classifier(state):
    """Drop what ViTAE's ImageNet classifier has and the backbone has not: the head and the unused relative
    position indices of its window attentions."""
    return {k: v for k, v in state.items() if not k.startswith("head.") and not k.endswith("relative_position_index")}
