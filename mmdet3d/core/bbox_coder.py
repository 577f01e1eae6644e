"""CenterPoint box coder: boxes <-> per-cell regression targets and dense head outputs -> boxes.

Regression code per object (10 channels): ``[dx, dy, z, log l, log w, log h, sin yaw, cos yaw, vx, vy]`` in our box
convention (``z`` the geometric centre, no gravity-centre shift), where ``(dx, dy)`` is the centre's offset from the
corner of its BEV cell. Without ``norm_bbox`` the sizes are not logged.
"""
import torch

from mmdet3d.registry import MODELS

__all__ = ["CenterPointBBoxCoder", "CODE_SIZE"]

CODE_SIZE = 10


@MODELS.register_module()
class CenterPointBBoxCoder:
    """Encodes our 9-dim boxes for a BEV grid of ``voxel_size * out_size_factor`` cells starting at ``pc_range[:2]``
    and decodes dense predictions ``[B, C, X, Y]`` (dim 2 = x) back to boxes.

    Args:
        pc_range: point-cloud range; only ``[xmin, ymin]`` is used.
        out_size_factor: voxels per heatmap cell.
        voxel_size: ``(dx, dy)`` of a voxel in metres (more entries are ignored).
        post_center_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` decoded centres must lie in, or ``None``.
        max_num: top-K per class and overall.
        score_threshold: decoded boxes need a score strictly above it (``None``: no threshold).
        code_size: box dimension; must be 9 ``(x, y, z, l, w, h, yaw, vx, vy)``.
        norm_bbox: sizes are regressed as logs.
    """

    def __init__(self, pc_range, out_size_factor, voxel_size, post_center_range=None, max_num=100,
                 score_threshold=None, code_size=9, norm_bbox=True):
        if code_size != 9:
            raise ValueError(f"CenterPointBBoxCoder: code_size must be 9 (x, y, z, l, w, h, yaw, vx, vy), "
                             f"got {code_size}")
        if len(pc_range) < 2 or len(voxel_size) < 2:
            raise ValueError("CenterPointBBoxCoder: pc_range and voxel_size need at least (x, y) entries")
        if post_center_range is not None and len(post_center_range) != 6:
            raise ValueError(f"CenterPointBBoxCoder: post_center_range needs 6 values, got {post_center_range}")
        self.pc_range = [float(v) for v in pc_range]
        self.out_size_factor = out_size_factor
        self.voxel_size = [float(v) for v in voxel_size]
        self.post_center_range = None if post_center_range is None else [float(v) for v in post_center_range]
        self.max_num = int(max_num)
        self.score_threshold = score_threshold
        self.code_size = code_size
        self.norm_bbox = bool(norm_bbox)

    @property
    def cell_size(self):
        """``(x, y)`` size of a heatmap cell in metres."""
        return (self.voxel_size[0] * self.out_size_factor, self.voxel_size[1] * self.out_size_factor)

    def centers_to_cells(self, xy):
        """Continuous cell coordinates ``[M, 2]`` of BEV points ``xy [M, 2]`` (metres)."""
        origin = xy.new_tensor(self.pc_range[:2])
        return (xy - origin) / xy.new_tensor(self.cell_size)

    def encode(self, boxes, cells_int):
        """Regression targets ``[M, 10]`` of boxes ``[M, 9]`` whose centres fall in integer cells ``[M, 2]``."""
        offsets = self.centers_to_cells(boxes[:, :2]) - cells_int.to(boxes.dtype)
        dims = boxes[:, 3:6].log() if self.norm_bbox else boxes[:, 3:6]
        yaw = boxes[:, 6:7]
        return torch.cat([offsets, boxes[:, 2:3], dims, yaw.sin(), yaw.cos(), boxes[:, 7:9]], dim=1)

    def decode(self, heat, rot_sin, rot_cos, hei, dim, vel=None, reg=None):
        """Boxes from one task's dense outputs, each ``[B, ch, X, Y]``.

        ``heat`` holds class probabilities (after the sigmoid), ``dim`` the raw size output (logs if ``norm_bbox``).
        Without ``reg`` centres sit at cell centres; without ``vel`` velocities are 0.

        Returns a list over the batch of dicts ``bboxes [K, 9]``, ``scores [K]``, ``labels [K]`` (int64, class index
        within the task), ordered by decreasing score.
        """
        batch, num_cls, size_x, size_y = heat.shape
        k_cls = min(self.max_num, size_x * size_y)
        cls_scores, cls_inds = heat.reshape(batch, num_cls, -1).topk(k_cls, dim=2)
        k = min(self.max_num, num_cls * k_cls)
        scores, top = cls_scores.reshape(batch, -1).topk(k, dim=1)
        labels = torch.div(top, k_cls, rounding_mode="floor")
        inds = cls_inds.reshape(batch, -1).gather(1, top)

        def gather(feat):
            flat = feat.reshape(batch, feat.shape[1], -1)
            return flat.gather(2, inds[:, None].expand(-1, feat.shape[1], -1)).transpose(1, 2)

        xs = torch.div(inds, size_y, rounding_mode="floor").to(heat.dtype)
        ys = (inds % size_y).to(heat.dtype)
        if reg is None:
            xs, ys = xs + 0.5, ys + 0.5
        else:
            offsets = gather(reg)
            xs, ys = xs + offsets[..., 0], ys + offsets[..., 1]
        cell_x, cell_y = self.cell_size
        centers = torch.stack([xs * cell_x + self.pc_range[0], ys * cell_y + self.pc_range[1]], dim=-1)
        dims = gather(dim)
        if self.norm_bbox:
            dims = dims.exp()
        yaw = torch.atan2(gather(rot_sin), gather(rot_cos))
        velocity = gather(vel) if vel is not None else centers.new_zeros(batch, k, 2)
        boxes = torch.cat([centers, gather(hei), dims, yaw, velocity], dim=-1)

        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep &= scores > self.score_threshold
        if self.post_center_range is not None:
            low = boxes.new_tensor(self.post_center_range[:3])
            high = boxes.new_tensor(self.post_center_range[3:])
            keep &= ((boxes[..., :3] >= low) & (boxes[..., :3] <= high)).all(-1)
        return [{"bboxes": boxes[b][keep[b]], "scores": scores[b][keep[b]], "labels": labels[b][keep[b]]}
                for b in range(batch)]
