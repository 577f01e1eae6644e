"""Diagnostics for a SimDistill student: what each loss contributes and whether teacher and student grids agree.

* ``loss_gradient_norms``: for each loss group (GT detection, IMD, CMD, MMD-F, heatmap KD, box KD), its value and the
  L2 norm of its gradient on each student module, so that a loss that dominates, vanishes or reaches the wrong modules
  shows at once.
* ``student_detection_loss``: the student's GT heatmap and box losses in eval mode, a continuous measure of how
  well a student detects that still separates models whose mAP is too small to compare.
* ``balanced_weights``: the loss weights that would bring each distillation loss's gradient on one student module to
  a chosen fraction of the detection loss's there (gradients scale linearly with a loss's weight), the rule that set
  the weights of ``configs/synthetic/det/simdistill.yaml``.
* ``bev_alignment``: for each BEV map, the correlation of its per-cell feature norm with the GT object mask under the
  eight symmetries of a square grid. A map whose strongest (largest-magnitude) correlation is not at the identity is
  transposed or flipped relative to the head's targets, and a feature loss between it and an aligned map would teach
  the wrong cells.
"""
import collections

import torch

STUDENT_MODULES = ("encoders_student.camera.backbone", "encoders_student.camera.neck",
                   "encoders_student.camera.vtransform", "encoders_student.camera.vtransform2", "deformAttn",
                   "trans_student", "fuser_student", "decoder_student", "heads_student")

GRID_SYMMETRIES = {
    "identity": lambda m: m,
    "transpose": lambda m: m.transpose(-1, -2),
    "flip_x": lambda m: m.flip(-2),
    "flip_y": lambda m: m.flip(-1),
    "rotate_180": lambda m: m.flip(-2, -1),
    "transpose_flip_x": lambda m: m.transpose(-1, -2).flip(-2),
    "transpose_flip_y": lambda m: m.transpose(-1, -2).flip(-1),
    "anti_transpose": lambda m: m.transpose(-1, -2).flip(-2, -1),
}


def loss_group(name):
    """``loss/object/heatmap/task0`` -> ``object``, ``loss/distill/kd_box/task3`` -> ``kd_box``."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "loss":
        raise ValueError(f"loss name {name!r}: expected loss/<object|distill>/<name>[/...]")
    return "object" if parts[1] == "object" else parts[2]


def student_parameters(model):
    """Trainable parameters of each student module the model has, by module name."""
    groups = collections.OrderedDict()
    for name in STUDENT_MODULES:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups[name] = params
    return groups


def loss_gradient_norms(model, batch):
    """``{group: {"value": float, "grad_norm": {module: float}}}`` for one training batch; the model's gradients
    are left untouched."""
    losses = model(mode="loss", **batch)
    grouped = collections.OrderedDict()
    for name, value in losses.items():
        group = loss_group(name)
        grouped[group] = grouped.get(group, 0) + value
    modules = student_parameters(model)
    flat = [p for params in modules.values() for p in params]
    report = collections.OrderedDict()
    for group, value in grouped.items():
        grads = torch.autograd.grad(value, flat, retain_graph=True, allow_unused=True)
        norms, i = {}, 0
        for module, params in modules.items():
            squares = [g.pow(2).sum() for g in grads[i:i + len(params)] if g is not None]
            norms[module] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
            i += len(params)
        report[group] = {"value": float(value.detach()), "grad_norm": norms}
    return report


def balanced_weights(report, weights, fraction, module, detection_group="object"):
    """``{group: {"weight", "grad_norm", "ratio", "balanced"}}`` for every distillation group of ``report`` (as
    ``loss_gradient_norms`` returns, averaged or not): ``ratio`` is the group's gradient norm on ``module`` over the
    detection loss's, ``balanced = weight * fraction / ratio`` the weight that would make it ``fraction``; ``None``
    where the group does not reach ``module``."""
    if detection_group not in report:
        raise ValueError(f"no {detection_group!r} loss group to balance against (groups: {sorted(report)})")
    reference = report[detection_group]["grad_norm"].get(module)
    if not reference:
        raise ValueError(f"the detection loss has no gradient on {module!r} (modules: "
                         f"{sorted(report[detection_group]['grad_norm'])})")
    out = collections.OrderedDict()
    for group, row in report.items():
        if group == detection_group:
            continue
        if group not in weights:
            raise ValueError(f"loss group {group!r} has no weight in model.distill_weights ({sorted(weights)})")
        norm = row["grad_norm"].get(module, 0.0)
        ratio = norm / reference
        out[group] = {"weight": weights[group], "grad_norm": norm, "ratio": ratio,
                      "balanced": weights[group] * fraction / ratio if ratio > 0 else None}
    return out


def student_detection_loss(model, batch):
    """``{"heatmap": float, "bbox": float}``: the student head's GT losses on ``batch``, summed over tasks, with the
    model in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            head = model.heads_student["object"]
            losses = head.loss(batch["gt_bboxes_3d"], batch["gt_labels_3d"], model.head_outputs(batch))
    finally:
        model.train(was_training)
    return {kind: float(sum(v for k, v in losses.items() if k.startswith(kind + "/"))) for kind in ("heatmap", "bbox")}


def best_symmetry(correlations):
    """The symmetry whose correlation has the largest magnitude."""
    return max(correlations, key=lambda s: abs(correlations[s]))


def standardise(x):
    return (x - x.mean()) / x.std().clamp(min=1e-12)


def bev_alignment(maps, object_mask):
    """``{map name: {symmetry: correlation}}`` between each map's per-cell feature norm ([B, C, X, Y] -> [B, X, Y])
    and ``object_mask`` [B, 1, X, Y], averaged over the batch."""
    mask = object_mask[:, 0].float()
    out = collections.OrderedDict()
    for name, bev in maps.items():
        if bev.shape[0] != mask.shape[0] or bev.shape[2:] != mask.shape[1:]:
            raise ValueError(f"BEV map {name!r} {list(bev.shape)} does not match the object mask "
                             f"{list(object_mask.shape)}")
        energy = bev.detach().float().norm(dim=1)
        out[name] = {s: float(torch.stack([(standardise(f(e)) * standardise(m)).mean()
                                            for e, m in zip(energy, mask)]).mean())
                     for s, f in GRID_SYMMETRIES.items()}
    return out


def student_and_teacher_maps(model, batch):
    """The six BEV maps of one batch: teacher camera / LiDAR / fused and student sim-LiDAR / camera / fused."""
    with torch.no_grad():
        teacher = model.extract_bev(batch)
        sim_lidar, camera, fused, _ = model.student_outputs(batch)
    return collections.OrderedDict([
        ("teacher camera", teacher["camera"]), ("teacher lidar", teacher["lidar"]), ("teacher fused", teacher["fused"]),
        ("student sim-lidar", sim_lidar), ("student camera", camera), ("student fused", fused)])
