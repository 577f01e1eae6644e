"""Gaussian heatmap targets of CenterPoint-style heads."""
import numpy as np
import torch

__all__ = ["gaussian_radius", "gaussian_2d", "draw_heatmap_gaussian"]


def gaussian_radius(det_size, min_overlap=0.5):
    """Heatmap radius (in cells) of an object of size ``det_size = (length, width)`` (cells; floats or arrays).

    This is CenterNet's three-case formula exactly as CenterPoint/BEVFusion ship it, so that our targets equal theirs
    and the tuned ``gaussian_overlap``/``min_radius`` keep their meaning. It is *not* the geometric radius of the
    three corner-shift cases: with ``r1, r2, r3`` the largest corner shifts keeping IoU >= ``min_overlap`` when the
    box is shifted diagonally, shrunk and grown, it returns ``min(l + w - r1, 2 (l + w) - 4 r2, 4 o r3)`` (the first
    two take the other root of each quadratic, the third divides by 2 instead of 2a). Elementwise on arrays.
    """
    length, width = (np.asarray(v, dtype=np.float64) for v in det_size)
    o = float(min_overlap)
    b1 = length + width
    c1 = width * length * (1 - o) / (1 + o)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (length + width)
    c2 = (1 - o) * width * length
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * o
    b3 = -2 * o * (length + width)
    c3 = (o - 1) * width * length
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    radius = np.minimum(np.minimum(r1, r2), r3)
    return float(radius) if radius.ndim == 0 else radius


def gaussian_2d(radius):
    """``(2r+1, 2r+1)`` float64 Gaussian with sigma ``(2r+1)/6`` and peak 1; values below ``eps * max`` are zeroed."""
    r = int(radius)
    sigma = (2 * r + 1) / 6
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return g


def draw_heatmap_gaussian(heatmap, center, radius, k=1.0):
    """Writes ``max(heatmap, k * gaussian)`` around ``heatmap[center[0], center[1]]`` in place and returns it.

    ``heatmap`` is a 2-D numpy array or tensor; ``center`` indexes (dim 0, dim 1), i.e. ``(x cell, y cell)`` of a
    ``[X, Y]`` BEV map. The Gaussian is clipped at the borders.
    """
    r = int(radius)
    i, j = int(center[0]), int(center[1])
    rows, cols = heatmap.shape[:2]
    if not (0 <= i < rows and 0 <= j < cols):
        raise ValueError(f"draw_heatmap_gaussian: center {(i, j)} outside the heatmap of shape {(rows, cols)}")
    up, down = min(i, r), min(rows - i, r + 1)
    left, right = min(j, r), min(cols - j, r + 1)
    patch = gaussian_2d(r)[r - up:r + down, r - left:r + right] * k
    window = heatmap[i - up:i + down, j - left:j + right]
    if isinstance(heatmap, torch.Tensor):
        window.copy_(torch.maximum(window, torch.from_numpy(patch).to(window)))
    else:
        np.maximum(window, patch.astype(window.dtype, copy=False), out=window)
    return heatmap
