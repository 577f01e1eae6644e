"""Each distillation loss against a value computed element by element in plain Python."""
import math

import pytest
import torch

from mmdet3d.models.losses import distill


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce_logits(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def smooth_l1(d, beta=1.0 / 9.0):
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_feature_mse_hand_value_and_teacher_detached():
    s = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]]], requires_grad=True)
    t = torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]], requires_grad=True)
    loss = distill.feature_mse(s, t)
    assert loss.item() == pytest.approx((1 + 4 + 1 + 4) / 4)
    loss.backward()
    assert t.grad is None and s.grad is not None
    official = distill.feature_mse(s, t, official=True)
    official.backward()
    assert t.grad is not None  # the released code lets gradients reach the teacher (F5)


def test_cross_modal_paper_and_official():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]]])  # [1, 2, 2, 2]
    t = torch.zeros_like(s)
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    # paper: sum(mask * d^2) / (sum(mask) * C)
    num = 1.0 * (1 ** 2 + 0 ** 2) + 0.5 * (2 ** 2 + 0 ** 2)
    assert distill.cross_modal_loss(s, t, mask).item() == pytest.approx(num / (1.5 * 2))
    # official: 100 * mean((mask*s - mask*t)^2) over all 8 elements
    off = 100 * ((1.0 * 1) ** 2 + (0.5 * 2) ** 2) / 8
    assert distill.cross_modal_loss(s, t, mask, official=True).item() == pytest.approx(off)


def test_cross_modal_rejects_bad_mask():
    with pytest.raises(ValueError, match="object mask"):
        distill.cross_modal_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3))


def heatmaps():
    student = torch.tensor([[[[0.5, -1.0], [2.0, -3.0]]], [[[0.0, 1.0], [-2.0, -4.0]]]])  # [B=2, 1, 2, 2]
    teacher = torch.tensor([[[[1.0, -2.0], [3.0, -5.0]]], [[[-3.0, 2.0], [-1.0, -6.0]]]])
    return student, teacher


def test_kd_heatmap_paper_form():
    s, t = heatmaps()
    per_sample = []
    for b in range(2):
        total, positives = 0.0, 0
        for x in range(2):
            for y in range(2):
                hs, pt = s[b, 0, x, y].item(), sig(t[b, 0, x, y].item())
                total += bce_logits(hs, pt) * abs(sig(hs) - pt) ** 2
                positives += pt > 0.1
        per_sample.append(total / max(positives, 1))
    expected = sum(per_sample) / 2
    assert distill.kd_heatmap_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_kd_heatmap_official_form_reference_5_2():
    s, t = heatmaps()
    clip = lambda v: min(max(sig(v), 1e-4), 1 - 1e-4)  # noqa: E731
    total = 0.0
    for b in range(2):
        for x in range(2):
            for y in range(2):
                sv, uv = clip(s[b, 0, x, y].item()), clip(t[b, 0, x, y].item())
                total += bce_logits(sv, sig(uv)) * abs(sig(sv) - sig(uv)) ** 2
    normaliser = 2 * 2 / 1  # X*Y/n_cls; the batch is summed
    assert distill.kd_heatmap_loss(s, t, official=True).item() == pytest.approx(total / normaliser, rel=1e-5)


def box_inputs():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 10, generator=g)
    teacher = torch.randn(2, 3, 10, generator=g)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    weights = [1.0] * 8 + [0.2, 0.2]
    return student, teacher, mask, weights


def test_kd_box_paper_form_masked_by_objects():
    s, t, mask, w = box_inputs()
    total = 0.0
    for b in range(2):
        for k in range(3):
            if mask[b, k]:
                total += sum(smooth_l1((s[b, k, c] - t[b, k, c]).item() * w[c]) for c in range(10))
    expected = total / mask.sum().item()
    assert distill.kd_box_loss(s, t, mask, w).item() == pytest.approx(expected, rel=1e-5)
    # Padding slots carry no weight: changing them changes nothing.
    s2 = s.clone()
    s2[0, 2] += 100.0
    assert distill.kd_box_loss(s2, t, mask, w).item() == pytest.approx(expected, rel=1e-5)


def legacy_to_ours(code):
    """A released-code box code [..., 10] (x, y, z, log w, log l, log h, sin theta, cos theta, vx, vy with
    theta = -yaw - pi/2) in our layout (log l, log w; sin yaw = -cos theta, cos yaw = -sin theta)."""
    out = code.clone()
    out[..., 3], out[..., 4] = code[..., 4], code[..., 3]
    out[..., 6], out[..., 7] = -code[..., 7], -code[..., 6]
    return out


def test_kd_box_official_form_reference_5_3():
    """The released formula evaluated by hand on legacy-layout codes equals ours on the same codes in our layout."""
    s_legacy, t_legacy, mask, w = box_inputs()
    t_legacy[1, 2, 3] = float("nan")
    total = 0.0
    for b in range(2):
        per_sample = 0.0
        for k in range(3):
            a = s_legacy[b, k].tolist()
            tt = t_legacy[b, k].tolist()
            a6, t6 = a[6], tt[6]
            a[6], tt[6] = math.sin(a6) * math.cos(t6), math.cos(a6) * math.sin(t6)
            tt = [ai if math.isnan(ti) else ti for ai, ti in zip(a, tt)]
            per_sample += sum(smooth_l1((a[c] - tt[c]) * w[c]) for c in range(10))
        total += per_sample / 3
    ours = distill.kd_box_loss(legacy_to_ours(s_legacy), legacy_to_ours(t_legacy), mask, w, official=True)
    assert ours.item() == pytest.approx(total, rel=1e-6)


def test_shape_mismatch_names_tensors():
    with pytest.raises(ValueError, match="student heatmap"):
        distill.kd_heatmap_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))
