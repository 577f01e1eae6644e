import math

import numpy as np
import pytest
import torch

from mmdet3d.ops import multi_scale_deformable_attn

SHAPES = [(3, 4), (2, 5)]


def bilinear_zero_padded(feature, x, y):
    """Sample ``feature[H, W, Dh]`` at normalised (x, y), pixel i centred at (i + 0.5) / W."""
    H, W, _ = feature.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(feature.shape[2])
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < W and 0 <= yi < H:
                out += w * feature[yi, xi]
    return out


def brute_force(value, shapes, loc, attn):
    B, _, heads, Dh = value.shape
    Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
    value, loc, attn = value.numpy(), loc.numpy(), attn.numpy()
    out = np.zeros((B, Q, heads, Dh))
    start = 0
    for lvl, (H, W) in enumerate(shapes):
        level = value[:, start:start + H * W].reshape(B, H, W, heads, Dh)
        start += H * W
        for b in range(B):
            for q in range(Q):
                for h in range(heads):
                    for p in range(P):
                        x, y = loc[b, q, h, lvl, p]
                        out[b, q, h] += attn[b, q, h, lvl, p] * bilinear_zero_padded(level[b, :, :, h], x, y)
    return torch.from_numpy(out.reshape(B, Q, heads * Dh))


def inputs(seed, dtype=torch.float64, B=2, Q=5, heads=2, Dh=3, P=3):
    g = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in SHAPES)
    value = torch.randn(B, S, heads, Dh, generator=g, dtype=dtype)
    # reaching beyond [0, 1] exercises the zero padding
    loc = torch.rand(B, Q, heads, len(SHAPES), P, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    attn = torch.rand(B, Q, heads, len(SHAPES), P, generator=g, dtype=dtype)
    shapes = torch.tensor(SHAPES)
    starts = torch.tensor([0, SHAPES[0][0] * SHAPES[0][1]])
    return value, shapes, starts, loc, attn


def test_matches_brute_force():
    value, shapes, starts, loc, attn = inputs(0)
    loc[0, 0, 0, 0, 0] = torch.tensor([0.5 / 4, 0.5 / 3])  # exactly pixel (0, 0)'s centre
    out = multi_scale_deformable_attn(value, shapes, starts, loc, attn)
    assert out.shape == (2, 5, 6)
    torch.testing.assert_close(out, brute_force(value, SHAPES, loc, attn))


def test_pixel_centre_returns_the_pixel():
    value, shapes, starts, loc, attn = inputs(1, B=1, Q=1, heads=1, P=1)
    loc[..., 0, 0, :] = torch.tensor([2.5 / 4, 1.5 / 3], dtype=loc.dtype)  # level 0, pixel (row 1, col 2)
    attn.zero_()
    attn[..., 0, 0] = 1.0
    out = multi_scale_deformable_attn(value, shapes, starts, loc, attn)
    torch.testing.assert_close(out[0, 0], value[0, 1 * 4 + 2, 0])


def test_gradcheck():
    value, shapes, starts, loc, attn = inputs(2, B=1, Q=3, heads=2, Dh=2, P=2)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, l, a: multi_scale_deformable_attn(v, shapes, starts, l, a), (value, loc, attn))


def test_bad_shapes():
    value, shapes, starts, loc, attn = inputs(3)
    with pytest.raises(ValueError, match="do not tile"):
        multi_scale_deformable_attn(value[:, 1:], shapes, starts, loc, attn)
    with pytest.raises(ValueError, match="attention_weights"):
        multi_scale_deformable_attn(value, shapes, starts, loc, attn[..., :1])
    with pytest.raises(ValueError, match="sampling_locations"):
        multi_scale_deformable_attn(value, shapes, starts, loc[:, :, :1], attn)
