"""CenterPoint head (BEVFusion's ``CenterHead``) in our box convention.

One shared 3x3 conv, then per task a ``SeparateHead`` predicting a class heatmap and the regression maps ``reg``
(centre offset in the cell), ``height`` (centre z), ``dim`` (log l, w, h), ``rot`` (sin, cos yaw) and ``vel``, all
``[B, ch, X, Y]`` with dim 2 = x. State-dict keys match BEVFusion's (``shared_conv.conv``, ``task_heads.0.reg.0.conv``,
``task_heads.0.reg.1`` ...). Unlike the released code, ``init_weights`` runs at construction.
"""
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mmdet3d.core.bbox_coder import CODE_SIZE, CenterPointBBoxCoder
from mmdet3d.core.gaussian import draw_heatmap_gaussian, gaussian_radius
from mmdet3d.core.nms import NMS_TYPES
from mmdet3d.core.post_processing import decode_center_outputs
from mmdet3d.models.layers import ConvModule
from mmdet3d.models.losses import GaussianFocalLoss, L1Loss
from mmdet3d.registry import MODELS

__all__ = ["SeparateHead", "CenterHead", "CenterTargets", "clip_sigmoid", "REG_HEADS"]

# Regression heads in the order of the 10-channel box code, with their channel counts.
REG_HEADS = {"reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}


def clip_sigmoid(x, eps=1e-4):
    """``sigmoid(x)`` clamped to ``[eps, 1 - eps]`` (a new tensor; ``x`` is left alone)."""
    return x.sigmoid().clamp(min=eps, max=1 - eps)


def gather_feat(feat, ind):
    """Values of ``feat [B, C, X, Y]`` at flat BEV indices ``ind [B, N]`` (``x * Y + y``) -> ``[B, N, C]``."""
    flat = feat.flatten(2)
    return flat.gather(2, ind[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def _kaiming_init(conv):
    # mmcv's kaiming_init defaults (fan_out, relu, normal, zero bias), as CenterPoint's heads use.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


@MODELS.register_module()
class SeparateHead(nn.Module):
    """One sub-head per entry of ``heads = {name: (out_channels, num_convs)}``: ``num_convs - 1`` ConvModules
    (conv + BN + ReLU, ``head_conv`` channels) then a conv with bias, all ``final_kernel`` wide.

    ``forward`` returns ``{name: [B, out_channels, X, Y]}``.
    """

    def __init__(self, in_channels, heads, head_conv=64, final_kernel=1, init_bias=-2.19):
        super().__init__()
        if "heatmap" not in heads:
            raise ValueError("SeparateHead: heads needs a 'heatmap' entry")
        self.heads = {name: (int(spec[0]), int(spec[1])) for name, spec in heads.items()}
        self.init_bias = init_bias
        padding = final_kernel // 2
        for name, (out_channels, num_convs) in self.heads.items():
            if num_convs < 1:
                raise ValueError(f"SeparateHead: head {name!r} needs at least one conv, got {num_convs}")
            layers, c_in = [], in_channels
            for _ in range(num_convs - 1):
                layers.append(ConvModule(c_in, head_conv, final_kernel, padding=padding))
                c_in = head_conv
            layers.append(nn.Conv2d(c_in, out_channels, final_kernel, padding=padding, bias=True))
            self.add_module(name, nn.Sequential(*layers))
        self.init_weights()

    def init_weights(self):
        """Kaiming for every conv, except the final heatmap conv: default weights and bias ``init_bias`` (a prior
        probability of ~0.1 for -2.19)."""
        for name in self.heads:
            head = getattr(self, name)
            for module in head.modules():
                if isinstance(module, nn.Conv2d) and not (name == "heatmap" and module is head[-1]):
                    _kaiming_init(module)
        self.heatmap[-1].bias.data.fill_(self.init_bias)

    def forward(self, x):
        return {name: getattr(self, name)(x) for name in self.heads}


class CenterTargets(NamedTuple):
    """Training targets, one list entry per task.

    heatmaps ``[B, n_t, X, Y]`` (Gaussian peaks, 1 at object centres), anno_boxes ``[B, max_objs, 10]`` (box code),
    inds ``[B, max_objs]`` int64 flat cell index ``x * Y + y``, masks ``[B, max_objs]`` bool (slot holds an object).
    Slot k holds the task's k-th object of the sample.
    """
    heatmaps: list
    anno_boxes: list
    inds: list
    masks: list


def _task_class_names(task):
    names = task.get("class_names") if isinstance(task, dict) else task
    if isinstance(names, str) or not names:
        raise ValueError(f"CenterHead: a task must be a non-empty list of class names, got {task!r}")
    return list(names)


def _per_task(cfg, key, num_tasks, default=None):
    """A test_cfg entry given once for all tasks or as a list with one value per task."""
    value = cfg.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != num_tasks:
            raise ValueError(f"CenterHead: test_cfg.{key} has {len(value)} entries for {num_tasks} tasks")
        return list(value)
    return [value] * num_tasks


@MODELS.register_module()
class CenterHead(nn.Module):
    """CenterPoint detection head over a BEV feature map ``[B, in_channels, X, Y]``.

    Args:
        in_channels: channels of the BEV input.
        tasks: per task a list of class names (or a dict with ``class_names``); global labels number the classes
            in task order.
        common_heads: ``{name: (out_channels, num_convs)}``; must hold reg 2, height 1, dim 3, rot 2, vel 2.
        share_conv_channel: channels of the shared 3x3 conv.
        num_heatmap_convs: convs of each heatmap sub-head.
        separate_head: SeparateHead config (``type`` optional), e.g. ``{init_bias: -2.19, final_kernel: 3}``.
        loss_cls, loss_bbox: loss configs (``type`` keys, built from the registry).
        norm_bbox: regress log sizes.
        bbox_coder: CenterPointBBoxCoder config.
        train_cfg: target settings (BEVFusion's keys); needed by ``get_targets``/``loss``/``object_mask``.
        test_cfg: decoding/NMS settings (BEVFusion's keys); needed by ``get_bboxes``. ``max_pool_nms`` must be false.
    """

    def __init__(self, in_channels, tasks, common_heads, share_conv_channel=64, num_heatmap_convs=2,
                 separate_head=None, loss_cls=None, loss_bbox=None, norm_bbox=True, bbox_coder=None,
                 train_cfg=None, test_cfg=None):
        super().__init__()
        self.class_names = [_task_class_names(t) for t in tasks]
        self.num_classes = [len(names) for names in self.class_names]
        self.label_offsets = np.cumsum([0] + self.num_classes[:-1]).tolist()
        common_heads = {name: tuple(spec) for name, spec in common_heads.items()}
        channels = {name: common_heads.get(name, (None,))[0] for name in REG_HEADS}
        if channels != REG_HEADS:
            raise ValueError(f"CenterHead: common_heads must give channels {REG_HEADS}, got {channels}")
        if bbox_coder is None:
            raise ValueError("CenterHead: bbox_coder config is required")
        self.bbox_coder = self._build(bbox_coder, CenterPointBBoxCoder, norm_bbox=norm_bbox)
        self.loss_cls = self._build(loss_cls or {"reduction": "mean"}, GaussianFocalLoss)
        self.loss_bbox = self._build(loss_bbox or {"reduction": "mean", "loss_weight": 0.25}, L1Loss)
        self.train_cfg = self._check_train_cfg(train_cfg)
        self.test_cfg = self._check_test_cfg(test_cfg)

        self.shared_conv = ConvModule(in_channels, share_conv_channel, 3, padding=1)
        separate_head = dict(separate_head or {})
        separate_head.setdefault("type", SeparateHead)
        self.task_heads = nn.ModuleList()
        for num_cls in self.num_classes:
            heads = dict(common_heads, heatmap=(num_cls, num_heatmap_convs))
            self.task_heads.append(MODELS.build(dict(separate_head, in_channels=share_conv_channel, heads=heads)))
        self.init_weights()

    @staticmethod
    def _build(cfg, default_cls, **forced):
        cfg = dict(cfg)
        cfg.setdefault("type", default_cls)
        for key, value in forced.items():
            if cfg.get(key, value) != value:
                raise ValueError(f"CenterHead: {default_cls.__name__}.{key}={cfg[key]!r} contradicts the head's "
                                 f"{key}={value!r}")
            cfg[key] = value
        return MODELS.build(cfg)

    def _check_train_cfg(self, cfg):
        if cfg is None:
            return None
        cfg = dict(cfg)
        required = ("grid_size", "out_size_factor", "gaussian_overlap", "max_objs", "min_radius", "code_weights")
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ValueError(f"CenterHead: train_cfg lacks {missing}")
        if cfg.get("dense_reg", 1) != 1:
            raise ValueError(f"CenterHead: train_cfg.dense_reg must be 1, got {cfg['dense_reg']}")
        if len(cfg["code_weights"]) != CODE_SIZE:
            raise ValueError(f"CenterHead: train_cfg.code_weights needs {CODE_SIZE} values, got {cfg['code_weights']}")
        self._check_geometry(cfg, "train_cfg")
        return cfg

    def _check_test_cfg(self, cfg):
        if cfg is None:
            return None
        cfg = dict(cfg)
        if cfg.get("max_pool_nms", False):
            raise ValueError("CenterHead: test_cfg.max_pool_nms=true is not supported; use circle/rotate NMS")
        num_tasks = len(self.num_classes)
        nms_types = _per_task(cfg, "nms_type", num_tasks, "rotate")
        for nms_type in nms_types:
            if nms_type not in NMS_TYPES:
                raise ValueError(f"CenterHead: test_cfg.nms_type must be in {NMS_TYPES}, got {nms_type!r}")
        scales = cfg.get("nms_scale")
        if scales is None:
            scales = [[1.0] * n for n in self.num_classes]
        if len(scales) != num_tasks or any(len(s) != n for s, n in zip(scales, self.num_classes)):
            raise ValueError(f"CenterHead: test_cfg.nms_scale needs one factor per class of each task, got {scales}")
        limit = cfg.get("post_center_limit_range")
        if limit is not None and len(limit) != 6:
            raise ValueError(f"CenterHead: test_cfg.post_center_limit_range needs 6 values, got {limit}")
        self.nms_settings = [
            {"nms_type": t, "min_radius": r, "iou_threshold": thr, "label_scales": s,
             "pre_max_size": cfg.get("pre_max_size"), "post_max_size": cfg.get("post_max_size")}
            for t, r, thr, s in zip(nms_types, _per_task(cfg, "min_radius", num_tasks),
                                    _per_task(cfg, "nms_thr", num_tasks), scales)]
        self._check_geometry(cfg, "test_cfg")
        return cfg

    def _check_geometry(self, cfg, name):
        """The coder's grid is the one used; a cfg that states another grid is a config error."""
        coder = self.bbox_coder
        stated = {"out_size_factor": (cfg.get("out_size_factor"), coder.out_size_factor),
                  "voxel_size": (None if cfg.get("voxel_size") is None else list(cfg["voxel_size"][:2]),
                                 coder.voxel_size[:2]),
                  "point_cloud_range": (None if cfg.get("point_cloud_range") is None
                                        else list(cfg["point_cloud_range"][:2]), coder.pc_range[:2])}
        for key, (value, expected) in stated.items():
            if value is not None and not np.allclose(value, expected):
                raise ValueError(f"CenterHead: {name}.{key}={value} differs from bbox_coder's {expected}")

    def init_weights(self):
        _kaiming_init(self.shared_conv.conv)
        for head in self.task_heads:
            head.init_weights()

    @property
    def feature_map_size(self):
        """``(X, Y)`` of the output maps as set by ``train_cfg``."""
        if self.train_cfg is None:
            raise ValueError("CenterHead: train_cfg is required for targets and losses")
        grid = self.train_cfg["grid_size"]
        factor = self.train_cfg["out_size_factor"]
        return int(grid[0]) // factor, int(grid[1]) // factor

    def forward(self, x):
        """``x [B, in_channels, X, Y]`` -> one dict per task ``{reg, height, dim, rot, vel, heatmap}`` of
        ``[B, ch, X, Y]`` tensors (heatmap logits; ``dim`` logs when ``norm_bbox``)."""
        if x.dim() != 4:
            raise ValueError(f"CenterHead: input must be [B, C, X, Y], got shape {tuple(x.shape)}")
        feat = self.shared_conv(x)
        return [head(feat) for head in self.task_heads]

    # ----------------------------------------------------------------------------------------------- targets
    def get_targets(self, gt_bboxes_3d, gt_labels_3d):
        """Per-task targets of a batch of our boxes ``[M_b, 9]`` and global labels ``[M_b]`` (other labels, e.g.
        -1, are ignored). Returns ``CenterTargets`` on the boxes' device."""
        if len(gt_bboxes_3d) != len(gt_labels_3d) or not gt_bboxes_3d:
            raise ValueError(f"CenterHead: need one gt_labels_3d per gt_bboxes_3d and at least one sample, got "
                             f"{len(gt_bboxes_3d)} and {len(gt_labels_3d)}")
        per_sample = [self._targets_single(b, boxes, labels)
                      for b, (boxes, labels) in enumerate(zip(gt_bboxes_3d, gt_labels_3d))]
        return CenterTargets(*([torch.stack([sample[task][field] for sample in per_sample])
                                for task in range(len(self.num_classes))] for field in range(4)))

    def _targets_single(self, b, boxes, labels):
        """Per task ``(heatmap [n_t, X, Y], anno_box [max_objs, 10], ind [max_objs], mask [max_objs])``."""
        boxes = torch.as_tensor(boxes)
        labels = torch.as_tensor(labels)
        if boxes.dim() != 2 or boxes.shape[1] != 9:
            raise ValueError(f"CenterHead: gt_bboxes_3d[{b}] must be [M, 9], got shape {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(f"CenterHead: gt_labels_3d[{b}] must be [{boxes.shape[0]}], got {tuple(labels.shape)}")
        device = boxes.device
        boxes = boxes.detach().to("cpu", torch.float64)
        labels = labels.detach().to("cpu", torch.long)
        cfg = self.train_cfg
        size_x, size_y = self.feature_map_size
        max_objs = int(cfg["max_objs"])
        cell_x, cell_y = self.bbox_coder.cell_size
        out = []
        for offset, num_cls in zip(self.label_offsets, self.num_classes):
            heatmap = np.zeros((num_cls, size_x, size_y), dtype=np.float32)
            anno = torch.zeros(max_objs, CODE_SIZE, dtype=torch.float32)
            ind = torch.zeros(max_objs, dtype=torch.long)
            mask = torch.zeros(max_objs, dtype=torch.bool)
            in_task = ((labels >= offset) & (labels < offset + num_cls)).nonzero()[:max_objs, 0]
            task_boxes, task_labels = boxes[in_task], labels[in_task] - offset
            cells = self.bbox_coder.centers_to_cells(task_boxes[:, :2])
            # int() truncation as BEVFusion; NaN/inf centres and empty sizes drop out here.
            ok = torch.isfinite(cells).all(1) & (task_boxes[:, 3] > 0) & (task_boxes[:, 4] > 0)
            cells_int = torch.where(ok[:, None], cells, torch.zeros_like(cells)).to(torch.long)
            ok &= (cells_int >= 0).all(1) & (cells_int[:, 0] < size_x) & (cells_int[:, 1] < size_y)
            slots = ok.nonzero()[:, 0]
            if len(slots):
                sizes = task_boxes[slots, 3:5].numpy() / np.array([cell_x, cell_y])
                radii = gaussian_radius((sizes[:, 0], sizes[:, 1]), cfg["gaussian_overlap"])
                radii = np.maximum(int(cfg["min_radius"]), radii.astype(np.int64))
                for k, radius in zip(slots.tolist(), radii.tolist()):
                    draw_heatmap_gaussian(heatmap[task_labels[k]], cells_int[k].tolist(), radius)
                ind[slots] = cells_int[slots, 0] * size_y + cells_int[slots, 1]
                mask[slots] = True
                anno[slots] = self.bbox_coder.encode(task_boxes[slots], cells_int[slots]).float()
            out.append((torch.from_numpy(heatmap).to(device), anno.to(device), ind.to(device), mask.to(device)))
        return out

    @staticmethod
    def heatmaps_to_object_mask(heatmaps):
        """Sum of all classes' heatmaps of all tasks, ``[B, 1, X, Y]`` (peaks 1, can exceed 1 where objects of
        different classes overlap): the object-aware mask of SimDistill's cross-modal distillation."""
        return torch.cat(heatmaps, dim=1).sum(dim=1, keepdim=True)

    def object_mask(self, gt_bboxes_3d, gt_labels_3d):
        """``[B, 1, X, Y]`` object-aware mask of a batch of ground truth (see ``heatmaps_to_object_mask``)."""
        return self.heatmaps_to_object_mask(self.get_targets(gt_bboxes_3d, gt_labels_3d).heatmaps)

    # -------------------------------------------------------------------------------------------------- loss
    def loss(self, gt_bboxes_3d, gt_labels_3d, preds, targets=None):
        """``{'heatmap/task{t}', 'bbox/task{t}'}`` of ``preds`` (``forward``'s output) against the ground truth.

        The heatmap loss is the Gaussian focal loss of ``clip_sigmoid(logits)`` normalised by the number of peaks;
        the box loss is L1 on the 10-channel code at object cells, weighted by ``code_weights`` and normalised by
        the number of objects. Pass ``targets`` (from ``get_targets``) to reuse targets already computed.
        """
        if self.train_cfg is None:
            raise ValueError("CenterHead: train_cfg is required for loss")
        if targets is None:
            targets = self.get_targets(gt_bboxes_3d, gt_labels_3d)
        if len(preds) != len(self.num_classes):
            raise ValueError(f"CenterHead: preds has {len(preds)} tasks, the head {len(self.num_classes)}")
        losses = {}
        for t, pred in enumerate(preds):
            gt_heatmap = targets.heatmaps[t]
            if pred["heatmap"].shape != gt_heatmap.shape:
                raise ValueError(f"CenterHead: preds[{t}]['heatmap'] has shape {tuple(pred['heatmap'].shape)}, "
                                 f"targets {tuple(gt_heatmap.shape)} (check train_cfg.grid_size/out_size_factor)")
            num_peaks = gt_heatmap.eq(1).sum().clamp(min=1).float()
            losses[f"heatmap/task{t}"] = self.loss_cls(clip_sigmoid(pred["heatmap"].float()), gt_heatmap,
                                                       avg_factor=num_peaks)

            box_code = torch.cat([pred[name] for name in REG_HEADS], dim=1).float()
            box_pred = gather_feat(box_code, targets.inds[t])
            target = targets.anno_boxes[t]
            code_weights = target.new_tensor(self.train_cfg["code_weights"])
            finite = ~torch.isnan(target)
            weights = targets.masks[t][..., None].float() * finite * code_weights
            num_objects = targets.masks[t].float().sum()
            losses[f"bbox/task{t}"] = self.loss_bbox(box_pred, torch.where(finite, target, torch.zeros_like(target)),
                                                     weights, avg_factor=num_objects + 1e-4)
        return losses

    # ---------------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def get_bboxes(self, preds, metas=None):
        """Detections per sample: ``{boxes_3d [K, 9], scores_3d [K], labels_3d [K] int64}`` in our convention,
        LiDAR frame, global class ids. Per task: top-K decoding with the coder's score threshold and centre range,
        ``test_cfg.score_threshold``, then circle or rotated NMS; finally ``post_center_limit_range``.
        ``metas`` is not needed (BEVFusion's call signature)."""
        if self.test_cfg is None:
            raise ValueError("CenterHead: test_cfg is required for get_bboxes")
        if len(preds) != len(self.num_classes):
            raise ValueError(f"CenterHead: preds has {len(preds)} tasks, the head {len(self.num_classes)}")
        return decode_center_outputs(preds, self.bbox_coder, self.nms_settings, self.label_offsets,
                                     self.test_cfg.get("score_threshold"),
                                     self.test_cfg.get("post_center_limit_range"))
