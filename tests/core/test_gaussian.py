import math

import numpy as np
import pytest
import torch

from mmdet3d.core.gaussian import draw_heatmap_gaussian, gaussian_2d, gaussian_radius


def _iou_axis_aligned(a, b):
    """IoU of boxes given as (x0, y0, x1, y1), vectorised over a's leading dims."""
    ix = np.clip(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), 0, None)
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def _shifted(length, width, r, case):
    if case == "diagonal":    # both corners move by (r, r): one corner inside, one outside
        return (r, r, length + r, width + r)
    if case == "shrink":      # both corners inside
        return (r, r, length - r, width - r)
    return (-r, -r, length + r, width + r)  # both corners outside


def _largest_shift(length, width, overlap, case):
    """Brute force: the largest corner shift r keeping IoU >= overlap with the box [0, length] x [0, width], by
    scanning ever finer grids around the last admissible shift."""
    gt = (0.0, 0.0, length, width)
    lo = 0.0
    hi = {"shrink": min(length, width) / 2, "diagonal": min(length, width), "grow": 10 * (length + width)}[case]
    for step in (1e-2, 1e-4, 1e-6, 1e-8):
        r = np.arange(lo, hi, step)
        ok = _iou_axis_aligned(_shifted(length, width, r, case), gt) >= overlap
        # IoU falls monotonically with r in each case: the admissible shifts are a prefix of the grid.
        assert ok[0] and not ok[-1] and not np.any(np.diff(ok.astype(int)) > 0)
        lo, hi = r[ok].max(), r[ok].max() + step
    return lo


@pytest.mark.parametrize("length, width, overlap", [
    (7.5, 3.1667, 0.1),     # a 4.5 x 1.9 m car at 0.6 m cells
    (18.33, 4.83, 0.1),     # a bus
    (1.2, 1.1, 0.1),        # a pedestrian
    (6.0, 6.0, 0.7),
    (9.0, 2.0, 0.5),
])
def test_gaussian_radius_against_brute_force_cases(length, width, overlap):
    r_diag = _largest_shift(length, width, overlap, "diagonal")
    r_shrink = _largest_shift(length, width, overlap, "shrink")
    r_grow = _largest_shift(length, width, overlap, "grow")
    # CenterNet's released formula takes the other root in the first two cases and divides the third by 2, not 2a.
    expected = min(length + width - r_diag, 2 * (length + width) - 4 * r_shrink, 4 * overlap * r_grow)
    assert gaussian_radius((length, width), overlap) == pytest.approx(expected, abs=1e-6)


def test_gaussian_radius_is_elementwise_on_arrays():
    lengths = np.array([7.5, 1.2, 18.33])
    widths = np.array([3.1667, 1.1, 4.83])
    out = gaussian_radius((lengths, widths), 0.1)
    assert out.shape == (3,)
    for i in range(3):
        assert out[i] == pytest.approx(gaussian_radius((lengths[i], widths[i]), 0.1))


def test_gaussian_2d_values():
    g = gaussian_2d(2)
    sigma = 5 / 6
    assert g.shape == (5, 5)
    assert g[2, 2] == 1.0
    assert g[3, 2] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert g[0, 4] == pytest.approx(math.exp(-8 / (2 * sigma ** 2)))
    np.testing.assert_allclose(g, g.T)
    assert gaussian_2d(0).tolist() == [[1.0]]


def _reference_draw(shape, center, radius, existing):
    """Pixel-by-pixel reference of draw_heatmap_gaussian."""
    out = existing.copy()
    sigma = (2 * radius + 1) / 6
    for i in range(shape[0]):
        for j in range(shape[1]):
            di, dj = i - center[0], j - center[1]
            if abs(di) <= radius and abs(dj) <= radius:
                value = math.exp(-(di * di + dj * dj) / (2 * sigma * sigma))
                if value < np.finfo(np.float64).eps:
                    value = 0.0
                out[i, j] = max(out[i, j], value)
    return out


@pytest.mark.parametrize("center, radius", [((4, 7), 2), ((0, 0), 3), ((8, 1), 4), ((5, 9), 1), ((3, 3), 0)])
def test_draw_heatmap_gaussian_matches_pixel_reference(center, radius):
    rng = np.random.default_rng(0)
    existing = (rng.random((9, 10)) * 0.5).astype(np.float32)
    expected = _reference_draw((9, 10), center, radius, existing.astype(np.float64))

    heat_np = existing.copy()
    assert draw_heatmap_gaussian(heat_np, center, radius) is heat_np
    np.testing.assert_allclose(heat_np, expected, rtol=1e-6, atol=1e-7)

    heat_t = torch.from_numpy(existing.copy())
    draw_heatmap_gaussian(heat_t, center, radius)
    np.testing.assert_allclose(heat_t.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_draw_heatmap_gaussian_indexes_dim0_first():
    heat = np.zeros((6, 8), dtype=np.float32)
    draw_heatmap_gaussian(heat, (1, 5), 1)
    assert heat[1, 5] == 1.0 and heat.argmax() == 1 * 8 + 5
    assert heat[5, 1] == 0.0


def test_draw_heatmap_gaussian_weight_and_bad_center():
    heat = torch.zeros(5, 5)
    draw_heatmap_gaussian(heat, (2, 2), 1, k=0.5)
    assert heat.max().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="outside"):
        draw_heatmap_gaussian(heat, (5, 0), 1)
