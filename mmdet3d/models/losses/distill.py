"""The four SimDistill distillation losses (paper §3.3-3.5), each in the paper's form and, with ``official=True``,
in the form the released code computes (REFERENCE §5, findings F6-F8).

Teacher tensors are detached here in the paper form; the official form keeps their graph (REFERENCE F5).

* IMD, intra-modal: student camera BEV <-> teacher camera BEV (MSE).
* CMD, cross-modal: student simulated-LiDAR BEV (projected to the LiDAR channel count) <-> teacher LiDAR BEV,
  weighted by an object mask drawn from GT Gaussians.
* MMD-F, multi-modal fusion feature: student fused BEV <-> teacher fused BEV (MSE).
* MMD-P, prediction: heatmap quality-focal KD and box KD on the CenterHead outputs.
"""
import torch
import torch.nn.functional as F

KD_POSITIVE_THRESHOLD = 0.1
QFL_BETA = 2.0
SMOOTH_L1_BETA = 1.0 / 9.0
OFFICIAL_CMD_SCALE = 100.0
LEGACY_SIN_CHANNEL = 7  # our cos(yaw) channel = -sin(theta) of the released code's angle theta = -yaw - pi/2


def _teacher(t, official):
    return t if official else t.detach()


def feature_mse(student, teacher, official=False):
    """IMD and MMD-F: mean squared error over every element."""
    _check_same_shape(student, teacher, "student feature", "teacher feature")
    return F.mse_loss(student, _teacher(teacher, official))


def cross_modal_loss(sim_lidar, lidar, mask, official=False):
    """CMD between [B, C, X, Y] maps with an object mask [B, 1, X, Y].

    Paper form: sum(mask * (s - t)^2) / (sum(mask) * C). Official form: 100 * mean((mask*s - mask*t)^2) over all
    B*C*X*Y elements (REFERENCE F8).
    """
    _check_same_shape(sim_lidar, lidar, "simulated LiDAR BEV", "teacher LiDAR BEV")
    if mask.shape != (sim_lidar.shape[0], 1, *sim_lidar.shape[2:]):
        raise ValueError(f"object mask: expected [B, 1, X, Y] = {[sim_lidar.shape[0], 1, *sim_lidar.shape[2:]]}, "
                         f"got {list(mask.shape)}")
    mask = mask.to(sim_lidar.dtype)
    lidar = _teacher(lidar, official)
    if official:
        return OFFICIAL_CMD_SCALE * F.mse_loss(sim_lidar * mask, lidar * mask)
    weighted = (mask * (sim_lidar - lidar) ** 2).sum()
    return weighted / (mask.sum() * sim_lidar.shape[1]).clamp(min=1.0)


def clip_sigmoid(x, eps=1e-4):
    return torch.clamp(x.sigmoid(), min=eps, max=1 - eps)


def kd_heatmap_loss(student_logits, teacher_logits, official=False):
    """Quality-focal KD on one task's heatmap logits [B, n_cls, X, Y].

    Paper form: p_T = sigmoid(h_T); sum(BCE(h_S, p_T) * |sigmoid(h_S) - p_T|^2) over the map, divided by the number of
    cells with p_T > 0.1 (at least 1), averaged over the batch.
    Official form (REFERENCE §5.2): both heads pass through clip_sigmoid, the student probability is then used as a
    logit and the teacher gets a second sigmoid; the normaliser is X*Y/n_cls; summed over the batch.
    """
    _check_same_shape(student_logits, teacher_logits, "student heatmap", "teacher heatmap")
    if official:
        s = clip_sigmoid(student_logits)
        u = clip_sigmoid(teacher_logits).sigmoid()
        per_cell = F.binary_cross_entropy_with_logits(s, u, reduction="none") * (s.sigmoid() - u).abs() ** QFL_BETA
        normaliser = student_logits.shape[2] * student_logits.shape[3] / student_logits.shape[1]
        return per_cell.flatten(1).sum(1).sum() / normaliser
    p_t = teacher_logits.detach().sigmoid()
    per_cell = F.binary_cross_entropy_with_logits(student_logits, p_t, reduction="none") \
        * (student_logits.sigmoid() - p_t).abs() ** QFL_BETA
    positives = (p_t > KD_POSITIVE_THRESHOLD).flatten(1).sum(1).clamp(min=1)
    return (per_cell.flatten(1).sum(1) / positives).mean()


def kd_box_loss(student_reg, teacher_reg, mask, code_weights, official=False):
    """Box KD on one task's regression outputs gathered at the GT slots, [B, K, 10]; ``mask`` [B, K] marks real
    objects.

    Paper form: smooth-L1 (beta 1/9) weighted by code weights and the GT mask, divided by the number of objects.
    Official form (REFERENCE §5.3): every slot counts (padding too), the "sin difference" ``sin(a)cos(b)`` /
    ``cos(a)sin(b)`` is applied to the released code's channel 6, each sample is divided by K and the batch is summed.
    That channel holds sin(theta) of the legacy angle theta = -yaw - pi/2, which is ``-cos(yaw)`` = minus our channel
    7 (and the legacy cos(theta) is minus our channel 6, whose plain difference is unchanged by the sign), so the sin
    difference is taken of ``-channel 7`` and a model converted from released weights gets the released value.
    """
    _check_same_shape(student_reg, teacher_reg, "student box regression", "teacher box regression")
    weights = torch.as_tensor(code_weights, dtype=student_reg.dtype, device=student_reg.device)
    teacher = _teacher(teacher_reg, official)
    if official:
        a, t = student_reg.clone(), teacher.clone()
        legacy_s, legacy_t = -student_reg[..., LEGACY_SIN_CHANNEL], -teacher[..., LEGACY_SIN_CHANNEL]
        a[..., LEGACY_SIN_CHANNEL] = torch.sin(legacy_s) * torch.cos(legacy_t)
        t[..., LEGACY_SIN_CHANNEL] = torch.cos(legacy_s) * torch.sin(legacy_t)
        t = torch.where(torch.isnan(t), a, t)
        per_slot = F.smooth_l1_loss((a - t) * weights, torch.zeros_like(a), beta=SMOOTH_L1_BETA, reduction="none")
        return (per_slot.flatten(1).sum(1) / student_reg.shape[1]).sum()
    m = mask.to(student_reg.dtype).unsqueeze(-1)
    diff = torch.nan_to_num(student_reg - teacher) * weights
    per_slot = F.smooth_l1_loss(diff, torch.zeros_like(diff), beta=SMOOTH_L1_BETA, reduction="none") * m
    return per_slot.sum() / m.sum().clamp(min=1.0)


def _check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {list(a.shape)} and {name_b} {list(b.shape)} must have the same shape")
