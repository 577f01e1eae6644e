"""Pictures of one sample: a bird's-eye view and the six cameras, with ground-truth and predicted 3D boxes.

Boxes and points arrive in the (augmented) LiDAR frame of the batch. Camera panels show the de-normalised network
input; a box corner ``p`` lands on it as the view transform sees it: ``p`` is taken back through
``lidar_aug_matrix``, projected with ``lidar2image``, divided by depth and moved by ``img_aug_matrix``. Box edges that
cross the camera plane are clipped at ``NEAR`` metres of depth, so boxes beside or behind a camera never draw
mirrored lines.

The BEV panel puts the car's forward direction up: the LiDAR axis closest to the front camera's optical axis
(+y for nuScenes' LIDAR_TOP) points up, its right-hand neighbour points right, and the axes are labelled with the
LiDAR coordinates in metres.
"""
import dataclasses
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Circle, Polygon  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from mmdet3d.core.boxes import box_corners  # noqa: E402

CAMERA_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
# nuScenes' usual layout: the front row as seen by the driver, the back row below it.
CAMERA_GRID = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))

# Corner indices of ``box_corners``: bottom face 0-3, top face 4-7; corners 0, 3, 4, 7 form the front face, whose
# two diagonals (the last two edges) mark the heading in the camera views.
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7], [0, 7], [3, 4]])
NEAR = 0.1  # metres of depth where box edges are clipped

GT_COLOR = (0, 200, 0)
EGO_COLOR = (220, 20, 60)
# One colour per class, none of them green (the ground truth's).
CLASS_COLORS = ((31, 119, 180), (255, 127, 14), (140, 86, 75), (148, 103, 189), (227, 119, 194),
                (127, 127, 127), (0, 0, 128), (23, 190, 207), (214, 39, 40), (204, 153, 0))
POINT_CMAP = "plasma"


def class_color(label):
    return CLASS_COLORS[int(label) % len(CLASS_COLORS)]


def _rgb01(color):
    return tuple(c / 255 for c in color)


def _numpy(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def denormalize_images(img, mean, std):
    """Normalised network input ``[N, 3, H, W]`` -> uint8 RGB ``[N, H, W, 3]`` (``x * std + mean``, 0..255)."""
    img = _numpy(img).astype(np.float32)
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"img must be [N, 3, H, W], got {list(img.shape)}")
    rgb = img * np.asarray(std, np.float32).reshape(1, 3, 1, 1) + np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def project_box_edges(boxes, lidar2image, img_aug_matrix, lidar_aug_matrix=None, near=NEAR):
    """Image segments of the edges of ``boxes`` ``[K, >=7]`` (augmented LiDAR frame) in one camera.

    Returns ``[K, E, 2, 2]`` pixel coordinates (x right, y down; integer values are pixel centres) and a visibility
    mask ``[K, E]``; an edge partly behind the camera is cut where its depth equals ``near``.
    """
    corners = box_corners(_numpy(boxes).astype(np.float64)).reshape(-1, 3)
    homo = np.concatenate([corners, np.ones((len(corners), 1))], axis=1)
    if lidar_aug_matrix is not None:
        homo = homo @ np.linalg.inv(_numpy(lidar_aug_matrix).astype(np.float64)).T
    # (u d, v d, d) is affine in the 3D point, so clipping in it equals clipping the 3D edge.
    cam = (homo @ _numpy(lidar2image).astype(np.float64).T)[:, :3].reshape(-1, 8, 3)
    start, end = cam[:, BOX_EDGES[:, 0]], cam[:, BOX_EDGES[:, 1]]
    d0, d1 = start[..., 2:3], end[..., 2:3]
    visible = (d0[..., 0] > near) | (d1[..., 0] > near)
    # A visible edge has at most one endpoint in front of the near plane; it moves to the crossing point.
    denom = np.where(d1 == d0, 1.0, d1 - d0)
    crossing = start + (near - d0) / denom * (end - start)
    segments = np.stack([np.where(d0 < near, crossing, start), np.where(d1 < near, crossing, end)], axis=2)
    depth = np.maximum(segments[..., 2:3], near)
    pix = np.concatenate([segments[..., :2] / depth, depth, np.ones_like(depth)], axis=-1)
    pix = pix @ _numpy(img_aug_matrix).astype(np.float64).T
    return pix[..., :2], visible


def draw_box_edges(image, segments, visible, colors, width=1, scale=1):
    """Draws projected edges onto a copy of ``image`` (uint8 ``[H, W, 3]``) upsampled ``scale`` times.

    ``segments``/``visible`` as from ``project_box_edges``, ``colors`` one RGB tuple per box. Returns the image and,
    per box, the topmost visible endpoint inside the image (a place for its label) or None.
    """
    pil = Image.fromarray(np.ascontiguousarray(image))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.BILINEAR)
    draw = ImageDraw.Draw(pil)
    # Pixel centres stay pixel centres under the upsampling.
    scaled = (segments + 0.5) * scale - 0.5
    anchors = []
    for box_segments, box_visible, color in zip(scaled, visible, colors):
        inside = []
        for (p, q), shown in zip(box_segments, box_visible):
            if not shown:
                continue
            draw.line([tuple(p), tuple(q)], fill=tuple(color), width=width)
            inside += [pt for pt in (p, q) if 0 <= pt[0] < pil.width and 0 <= pt[1] < pil.height]
        anchors.append(min(inside, key=lambda pt: pt[1]) if inside else None)
    return np.asarray(pil), anchors


@dataclasses.dataclass(frozen=True)
class BevFrame:
    """How LiDAR axes map onto the BEV panel: ``forward`` axis (0 = x, 1 = y) up, ``lateral`` axis to the right;
    a sign of -1 means that axis decreases in that direction."""

    forward: int
    forward_sign: int
    lateral: int
    lateral_sign: int

    @classmethod
    def from_front_camera(cls, camera2lidar_front, lidar_aug_matrix=None):
        """Up = the LiDAR axis closest to the front camera's optical axis; right = forward turned clockwise."""
        axis = _numpy(camera2lidar_front).astype(np.float64)[:3, 2]
        if lidar_aug_matrix is not None:
            axis = _numpy(lidar_aug_matrix).astype(np.float64)[:3, :3] @ axis
        forward = int(np.argmax(np.abs(axis[:2])))
        forward_sign = 1 if axis[forward] > 0 else -1
        # Clockwise seen from above: (fx, fy) -> (fy, -fx).
        right = np.zeros(2)
        right[forward] = forward_sign
        right = np.array([right[1], -right[0]])
        lateral = int(np.argmax(np.abs(right)))
        return cls(forward, forward_sign, lateral, int(np.sign(right[lateral])))

    def plot_xy(self, xy):
        """LiDAR ``[..., 2]`` -> matplotlib data coordinates (raw LiDAR values; the axes are flipped as needed)."""
        xy = np.asarray(xy)
        return xy[..., self.lateral], xy[..., self.forward]

    def set_limits(self, ax, point_cloud_range):
        lo, hi = point_cloud_range[:2], point_cloud_range[3:5]
        h = (lo[self.lateral], hi[self.lateral])
        v = (lo[self.forward], hi[self.forward])
        ax.set_xlim(*(h if self.lateral_sign > 0 else h[::-1]))
        ax.set_ylim(*(v if self.forward_sign > 0 else v[::-1]))
        names = "xy"
        ax.set_xlabel(f"LiDAR {names[self.lateral]} (m), right →")
        ax.set_ylabel(f"LiDAR {names[self.forward]} (m), forward ↑")


@dataclasses.dataclass
class SampleView:
    """Everything drawn for one sample, as numpy arrays in the batch's (augmented) LiDAR frame."""

    token: str
    images: np.ndarray           # uint8 [6, H, W, 3], CAMERA_ORDER
    points: np.ndarray           # [P, >=3]
    gt_boxes: np.ndarray         # [M, 9]
    gt_labels: np.ndarray        # [M]
    lidar2image: np.ndarray      # [6, 4, 4]
    img_aug_matrix: np.ndarray   # [6, 4, 4]
    lidar_aug_matrix: np.ndarray  # [4, 4]
    camera2lidar: np.ndarray     # [6, 4, 4]
    pred_boxes: np.ndarray = None   # [K, 9]
    pred_scores: np.ndarray = None  # [K]
    pred_labels: np.ndarray = None  # [K]


def sample_view(batch, index, mean, std, prediction=None):
    """The ``index``-th sample of a collated batch (and its ``model(mode="predict")`` result) as a ``SampleView``."""
    for key in ("img", "lidar2image", "img_aug_matrix", "lidar_aug_matrix", "camera2lidar"):
        if key not in batch:
            raise ValueError(f"batch['{key}'] is required for drawing")
    metas = batch.get("metas") or [{}] * len(batch["img"])
    points = batch.get("points")
    gt_boxes = batch.get("gt_bboxes_3d")
    gt_labels = batch.get("gt_labels_3d")
    view = SampleView(
        token=str(metas[index].get("token", index)),
        images=denormalize_images(batch["img"][index], mean, std),
        points=_numpy(points[index]) if points is not None else np.zeros((0, 3), np.float32),
        gt_boxes=_numpy(gt_boxes[index]).reshape(-1, 9) if gt_boxes is not None else np.zeros((0, 9)),
        gt_labels=_numpy(gt_labels[index]).reshape(-1) if gt_labels is not None else np.zeros(0, np.int64),
        lidar2image=_numpy(batch["lidar2image"][index]),
        img_aug_matrix=_numpy(batch["img_aug_matrix"][index]),
        lidar_aug_matrix=_numpy(batch["lidar_aug_matrix"][index]),
        camera2lidar=_numpy(batch["camera2lidar"][index]),
    )
    if prediction is not None:
        view.pred_boxes = _numpy(prediction["boxes_3d"]).reshape(-1, prediction["boxes_3d"].shape[-1])
        view.pred_scores = _numpy(prediction["scores_3d"]).reshape(-1)
        view.pred_labels = _numpy(prediction["labels_3d"]).reshape(-1)
    return view


def _boxes_to_draw(view, class_names, score_thr):
    """``(boxes, colors, label texts, scores)`` for GT (detection classes only) then predictions above
    ``score_thr``."""
    keep = view.gt_labels >= 0
    boxes = [view.gt_boxes[keep][:, :7]]
    colors = [GT_COLOR] * int(keep.sum())
    texts = [None] * int(keep.sum())
    scores = [0.0] * int(keep.sum())
    if view.pred_boxes is not None:
        keep = view.pred_scores >= score_thr
        boxes.append(view.pred_boxes[keep][:, :7])
        for label, score in zip(view.pred_labels[keep], view.pred_scores[keep]):
            colors.append(class_color(label))
            texts.append(f"{_class_name(class_names, label)} {score:.2f}")
            scores.append(float(score))
    return np.concatenate(boxes, 0), colors, texts, scores


def _class_name(class_names, label):
    return class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))


def label_slots(anchors, texts, priority, char_width, height):
    """Indices of the labels to draw, highest ``priority`` first, skipping any whose box (``char_width`` per
    character wide, ``height`` high, above its anchor) would overlap a label already placed; the box colour and the
    legend still tell the class of an unlabelled box."""
    placed, keep = [], []
    for i in sorted(range(len(anchors)), key=lambda k: -priority[k]):
        if anchors[i] is None or texts[i] is None:
            continue
        x0, y1 = anchors[i]
        rect = (x0, y1 - height, x0 + char_width * len(texts[i]), y1)
        if all(rect[2] <= r[0] or r[2] <= rect[0] or rect[3] <= r[1] or r[3] <= rect[1] for r in placed):
            placed.append(rect)
            keep.append(i)
    return keep


def draw_camera_panel(ax, view, cam_index, boxes, colors, texts, scale, priority=None):
    segments, visible = project_box_edges(boxes, view.lidar2image[cam_index], view.img_aug_matrix[cam_index],
                                          view.lidar_aug_matrix)
    image, anchors = draw_box_edges(view.images[cam_index], segments, visible, colors, width=max(1, scale),
                                    scale=scale)
    ax.imshow(image)
    priority = priority if priority is not None else [0.0] * len(texts)
    # 6-point text is about 4.5 x 9 display pixels at 100 dpi; a camera panel is drawn about 500 pixels wide
    panel_scale = image.shape[1] / 500
    for i in label_slots(anchors, texts, priority, 4.5 * panel_scale, 10 * panel_scale):
        ax.text(anchors[i][0], anchors[i][1] - 2, texts[i], color=_rgb01(colors[i]), fontsize=6, va="bottom",
                bbox={"facecolor": "white", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
    ax.set_title(CAMERA_ORDER[cam_index], fontsize=9)
    ax.set_axis_off()


def _ring_step(radius):
    return 10.0 if radius <= 60 else 20.0


def draw_bev_panel(ax, view, class_names, point_cloud_range, score_thr=0.3):
    """Points coloured by height, GT boxes green, predictions coloured by class with a heading tick, the ego car
    (a triangle pointing forward), range rings and a legend."""
    frame = BevFrame.from_front_camera(view.camera2lidar[CAMERA_ORDER.index("CAM_FRONT")], view.lidar_aug_matrix)
    pcr = [float(v) for v in point_cloud_range]
    if len(view.points):
        h, v = frame.plot_xy(view.points[:, :2])
        # Above the box outlines (zorder 3), so that the returns on an object stay visible inside its box.
        scatter = ax.scatter(h, v, c=view.points[:, 2], cmap=POINT_CMAP, vmin=pcr[2], vmax=pcr[5], s=0.6,
                             linewidths=0, rasterized=True, zorder=3)
        bar = ax.figure.colorbar(scatter, cax=ax.inset_axes([0.03, 0.04, 0.3, 0.015]), orientation="horizontal")
        bar.set_label("point height z (m)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    radius = max(abs(x) for x in pcr[:2] + pcr[3:5])
    step = _ring_step(radius)
    for r in np.arange(step, radius * math.sqrt(2), step):
        ax.add_patch(Circle((0, 0), r, fill=False, color="0.6", lw=0.6, ls="--"))
        if r < radius:
            ax.text(*frame.plot_xy(r * _unit(frame.forward, frame.forward_sign)), f"{r:g} m", color="0.45",
                    fontsize=6, ha="left", va="bottom")
    handles = {}
    gt = view.gt_labels >= 0
    for box in view.gt_boxes[gt]:
        handles[-1, "ground truth"] = _draw_bev_box(ax, frame, box, GT_COLOR)
    if view.pred_boxes is not None:
        keep = view.pred_scores >= score_thr
        for box, label in zip(view.pred_boxes[keep], view.pred_labels[keep]):
            handles[int(label), _class_name(class_names, label)] = _draw_bev_box(ax, frame, box, class_color(label))
    forward = _unit(frame.forward, frame.forward_sign)
    left = np.array([-forward[1], forward[0]])
    ego = np.stack([2.0 * forward, -1.5 * forward + 1.0 * left, -1.5 * forward - 1.0 * left])
    ax.add_patch(Polygon(np.stack(frame.plot_xy(ego), -1), closed=True, color=_rgb01(EGO_COLOR), zorder=5))
    frame.set_limits(ax, pcr)
    ax.set_aspect("equal")
    ax.grid(False)
    if handles:
        order = sorted(handles)  # ground truth first, then the classes in label order
        ax.legend([handles[k] for k in order], [k[1] for k in order], loc="upper right", fontsize=7, framealpha=0.8)


def _unit(axis, sign):
    vector = np.zeros(2)
    vector[axis] = sign
    return vector


def _draw_bev_box(ax, frame, box, color):
    footprint = box_corners(box[None, :7].astype(np.float64))[0, :4, :2]
    centre = box[:2].astype(np.float64)
    front = centre + box[3] / 2 * np.array([math.cos(box[6]), math.sin(box[6])])
    rgb = _rgb01(color)
    patch = Polygon(np.stack(frame.plot_xy(footprint), -1), closed=True, fill=False, edgecolor=rgb, lw=1.0)
    ax.add_patch(patch)
    ax.plot(*frame.plot_xy(np.stack([centre, front])), color=rgb, lw=1.0)
    return patch


def camera_legend_entries(view, class_names, score_thr):
    """``(name, colour)`` of what the camera panels draw: ground truth, then each predicted class above
    ``score_thr`` in label order."""
    entries = [("ground truth", GT_COLOR)] if (view.gt_labels >= 0).any() else []
    if view.pred_boxes is not None:
        labels = sorted({int(label) for label in view.pred_labels[view.pred_scores >= score_thr]})
        entries += [(_class_name(class_names, label), class_color(label)) for label in labels]
    return entries


def render_sample(view, class_names, point_cloud_range, score_thr=0.3, dpi=100):
    """A figure: a legend row, the six cameras (3 x 2, nuScenes layout) and the BEV panel (axes in that order after
    the cameras: ``fig.axes[:6]`` cameras, ``[6]`` BEV, ``[7]`` legend row)."""
    if len(view.images) != len(CAMERA_ORDER):
        raise ValueError(f"expected {len(CAMERA_ORDER)} camera images, got {len(view.images)}")
    img_h, img_w = view.images.shape[1:3]
    scale = max(1, math.ceil(480 / img_w))
    boxes, colors, texts, scores = _boxes_to_draw(view, class_names, score_thr)
    cam_w = 5.0
    cam_h = cam_w * img_h / img_w
    bev_h = 3 * cam_w * 0.62
    legend_h = 0.3
    fig = plt.figure(figsize=(3 * cam_w, legend_h + 2 * cam_h + bev_h + 0.8), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(4, 3, height_ratios=[legend_h, cam_h, cam_h, bev_h])
    for row, names in enumerate(CAMERA_GRID):
        for col, name in enumerate(names):
            draw_camera_panel(fig.add_subplot(grid[row + 1, col]), view, CAMERA_ORDER.index(name), boxes, colors,
                              texts, scale, priority=scores)
    draw_bev_panel(fig.add_subplot(grid[3, :]), view, class_names, point_cloud_range, score_thr)
    # a legend row above the cameras: their panels label only the boxes whose labels do not collide, the colours
    # say the class of the rest
    legend_ax = fig.add_subplot(grid[0, :])
    legend_ax.set_axis_off()
    entries = camera_legend_entries(view, class_names, score_thr)
    if entries:
        legend_ax.legend([Line2D([], [], color=_rgb01(color), lw=2) for _, color in entries],
                         [name for name, _ in entries], loc="center", ncol=len(entries), fontsize=8, frameon=False)
    shown = 0 if view.pred_boxes is None else int((view.pred_scores >= score_thr).sum())
    preds = "no predictions" if view.pred_boxes is None else f"{shown} predictions (score >= {score_thr:g})"
    fig.suptitle(f"sample {view.token}: {int((view.gt_labels >= 0).sum())} GT boxes (green), {preds}", fontsize=11)
    return fig


def save_figure(fig, path):
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
