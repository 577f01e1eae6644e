"""Swin Transformer backbone with mmdet 2.x's module layout and state-dict key names.

Key names follow mmdet's ``SwinTransformer`` (``patch_embed.projection``, ``stages.{i}.blocks.{j}.attn.w_msa.*``,
``...ffn.layers.0.0``, ``stages.{i}.downsample.{reduction,norm}``, ``norm{i}``) so that BEVFusion checkpoints load
unchanged. Patch merging gathers each 2x2 neighbourhood in ``nn.Unfold`` order as mmdet does, and every stage pads
its input at the bottom/right (to the patch size, to even sizes, to window multiples), so any input size works.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmdet3d.registry import MODELS

from .pretrained import load_backbone_state, pretrained_path

__all__ = ["SwinTransformer", "convert_official_swin"]


def drop_path(x, prob, training):
    """Stochastic depth: zero whole samples with probability ``prob`` and rescale the rest."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, prob=0.0):
        super().__init__()
        self.prob = prob

    def forward(self, x):
        return drop_path(x, self.prob, self.training)


def _pad_bottom_right(x, multiple):
    """Pad a [B, C, H, W] map at the bottom and right up to multiples of ``multiple``."""
    pad_h = -x.shape[2] % multiple
    pad_w = -x.shape[3] % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv followed by an optional LayerNorm; returns tokens [B, H*W, C]."""

    def __init__(self, in_channels, embed_dims, patch_size, norm):
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims) if norm else None

    def forward(self, x):
        x = self.projection(_pad_bottom_right(x, self.patch_size))
        hw_shape = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw_shape


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> LayerNorm -> linear 4C -> 2C, halving the resolution."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        # nn.Unfold orders features channel-major then (row, col) in the 2x2 window, as mmdet's PatchMerging
        self.sampler = nn.Unfold(kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x, hw_shape):
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, *hw_shape)
        x = _pad_bottom_right(x, 2)
        out_hw = (x.shape[2] // 2, x.shape[3] // 2)
        x = self.sampler(x).transpose(1, 2)
        return self.reduction(self.norm(x)), out_hw


def relative_position_index(window):
    """[w*w, w*w] index into the (2w-1)^2 bias table for every pair of tokens of a window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


class WindowMSA(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    def __init__(self, embed_dims, num_heads, window_size, qkv_bias, qk_scale, attn_drop_rate, proj_drop_rate):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # persistent: mmdet checkpoints carry this buffer, and strict loading expects it
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        """x: [num_windows*B, N, C]; mask: [num_windows, N, N] of 0 / -100 or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


def window_partition(x, window):
    """[B, H, W, C] -> [B * H/w * W/w, w*w, C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows, window, h, w):
    """Inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h, w, window, shift, device):
    """[num_windows, w*w, w*w] additive mask that keeps attention inside the regions a cyclic shift glued together."""
    region = torch.zeros(1, h, w, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[:, hs, ws, :] = label
            label += 1
    windows = window_partition(region, window).squeeze(-1)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class ShiftWindowMSA(nn.Module):
    """(Shifted-)window attention over a token map, padding it to window multiples."""

    def __init__(self, embed_dims, num_heads, window_size, shift, qkv_bias, qk_scale, attn_drop_rate,
                 proj_drop_rate, drop_path_rate):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, qk_scale, attn_drop_rate,
                               proj_drop_rate)
        self.drop = DropPath(drop_path_rate)

    def forward(self, x, hw_shape):
        b, _, c = x.shape
        h, w = hw_shape
        ws, shift = self.window_size, self.shift_size
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, -w % ws, 0, -h % ws))
        hp, wp = x.shape[1:3]
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, shift, x.device).to(x.dtype)
        x = window_reverse(self.w_msa(window_partition(x, ws), mask=mask), ws, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        return self.drop(x)


class FFN(nn.Module):
    """Two-layer MLP with GELU and a residual; ``layers`` indices match mmcv's FFN."""

    def __init__(self, embed_dims, hidden_dims, drop_rate, drop_path_rate):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden_dims), nn.GELU(), nn.Dropout(drop_rate)),
            nn.Linear(hidden_dims, embed_dims),
            nn.Dropout(drop_rate),
        )
        self.dropout_layer = DropPath(drop_path_rate)

    def forward(self, x, identity):
        return identity + self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    def __init__(self, embed_dims, num_heads, hidden_dims, window_size, shift, qkv_bias, qk_scale, drop_rate,
                 attn_drop_rate, drop_path_rate, with_cp):
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, shift, qkv_bias, qk_scale, attn_drop_rate,
                                   drop_rate, drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, hidden_dims, drop_rate, drop_path_rate)

    def _forward(self, x, hw_shape):
        x = x + self.attn(self.norm1(x), hw_shape)
        return self.ffn(self.norm2(x), identity=x)

    def forward(self, x, hw_shape):
        if self.with_cp and x.requires_grad:
            return checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)


class SwinBlockSequence(nn.Module):
    """One stage: ``depth`` blocks alternating plain and shifted windows, then an optional patch merging."""

    def __init__(self, embed_dims, num_heads, hidden_dims, depth, window_size, qkv_bias, qk_scale, drop_rate,
                 attn_drop_rate, drop_path_rates, downsample, with_cp):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dims, num_heads, hidden_dims, window_size, j % 2 == 1, qkv_bias, qk_scale, drop_rate,
                      attn_drop_rate, drop_path_rates[j], with_cp)
            for j in range(depth)
        )
        self.downsample = PatchMerging(embed_dims, 2 * embed_dims) if downsample else None

    def forward(self, x, hw_shape):
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is None:
            return x, hw_shape, x, hw_shape
        down, down_hw = self.downsample(x, hw_shape)
        return down, down_hw, x, hw_shape


@MODELS.register_module()
class SwinTransformer(nn.Module):
    """Swin Transformer (Liu et al. 2021) returning the LayerNorm-ed outputs of ``out_indices`` as [B, C, H, W].

    Stage ``i`` has ``embed_dims * 2**i`` channels at stride ``patch_size * 2**i``. ``pretrained`` (or
    ``init_cfg=dict(type="Pretrained", checkpoint=PATH)``) names a local checkpoint loaded at construction;
    with ``convert_weights`` an original-Swin checkpoint (``layers.*``) is first mapped to this layout.
    """

    def __init__(self, in_channels=3, embed_dims=96, patch_size=4, window_size=7, mlp_ratio=4,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), out_indices=(0, 1, 2, 3), qkv_bias=True,
                 qk_scale=None, patch_norm=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                 with_cp=False, convert_weights=False, pretrained=None, init_cfg=None):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinTransformer: depths {depths} and num_heads {num_heads} differ in length")
        if any(not 0 <= i < len(depths) for i in out_indices):
            raise ValueError(f"SwinTransformer: out_indices {out_indices} outside 0..{len(depths) - 1}")
        self.out_indices = tuple(out_indices)
        self.convert_weights = convert_weights
        self.arch = (f"SwinTransformer(embed_dims={embed_dims}, depths={list(depths)}, num_heads={list(num_heads)}, "
                     f"window_size={window_size})")
        self.pretrained = pretrained_path(pretrained, init_cfg, "SwinTransformer")
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_norm)
        self.drop_after_pos = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.num_features = [embed_dims * 2**i for i in range(len(depths))]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            dims = self.num_features[i]
            self.stages.append(SwinBlockSequence(
                dims, num_heads[i], int(mlp_ratio * dims), depth, window_size, qkv_bias, qk_scale, drop_rate,
                attn_drop_rate, rates[sum(depths[:i]):sum(depths[:i + 1])], i < len(depths) - 1, with_cp))
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self._init_random()
        # At construction, not only through init_weights: mmengine's recursive init stops at the ModuleDicts that
        # hold the encoders, so a detector would otherwise keep a random backbone without a word.
        self.init_weights()

    def _init_random(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self):
        """Load the configured pretrained checkpoint, if any.

        The file must hold every weight of the patch embedding and of the stages, and no stage weight this model
        lacks: a checkpoint of another Swin size (Swin-S/B, another window) or of another network is a one-line
        error. The output norms may be missing (a classification checkpoint) and extra keys outside the stages
        (``norm0``, the classifier) are reported, not fatal.
        """
        if self.pretrained is not None:
            convert = convert_official_swin if self.convert_weights else None
            load_backbone_state(self, self.pretrained, convert=convert, required=_swin_architecture_key,
                                owner=self.arch)

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape, out, out_hw = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.transpose(1, 2).reshape(out.shape[0], -1, *out_hw).contiguous())
        return outs


def _swin_architecture_key(key):
    """Weights that every checkpoint of the same Swin must have (buffers such as masks and indices excepted)."""
    if key.endswith(("relative_position_index", "attn_mask")):
        return False
    return key.startswith(("patch_embed.", "stages."))


def _unfold_order(x):
    """Reorder the 4C features of original-Swin patch merging (x00, x10, x01, x11 blocks) to nn.Unfold order."""
    groups = x.reshape(*x.shape[:-1], 4, x.shape[-1] // 4)[..., [0, 2, 1, 3], :]
    return groups.transpose(-1, -2).reshape(x.shape)


def convert_official_swin(state):
    """Map an original Swin (Microsoft) state dict to this module's key names; mmdet-layout keys pass through."""
    out = {}
    for key, value in state.items():
        if key.startswith("head"):
            continue
        if key.startswith("layers."):
            key = "stages." + key[len("layers."):]
            if "downsample" in key:
                value = _unfold_order(value)
            key = key.replace(".attn.", ".attn.w_msa.").replace(".mlp.fc1.", ".ffn.layers.0.0.")
            key = key.replace(".mlp.fc2.", ".ffn.layers.1.")
        elif key.startswith("patch_embed.proj."):
            key = key.replace("patch_embed.proj.", "patch_embed.projection.")
        out[key] = value
    return out
