"""Drawing (projection onto the cameras, BEV orientation) and ``tools/visualize.py`` end to end on the real frame."""
import json
import os
import pickle

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from pyquaternion import Quaternion

from helpers.tools import load_tool
from helpers.fake_batch import TINY, make_batch, tiny_config
from mmdet3d.analysis import visualization as vis
from mmdet3d.core.boxes import boxes_to_legacy
from mmdet3d.datasets.pipelines.transforms_2d import ImageNormalize

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
DATA = os.path.join(TESTS, "data")

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
RED = (255, 0, 0)


@pytest.fixture(autouse=True)
def one_thread():
    # Small ops on a shared 2-core machine run many times faster on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def real_meta():
    with open(os.path.join(DATA, "sample.json")) as f:
        return json.load(f)


def _quaternion(matrix):
    return list(Quaternion(matrix=np.asarray(matrix)[:3, :3], rtol=1e-5, atol=1e-5).elements)


def write_real_frame_infos(root, copies=1):
    """``root/nuscenes_infos_val.pkl`` holding the real key frame of tests/data ``copies`` times (distinct tokens
    and timestamps), in the converter's info layout."""
    meta = real_meta()
    lidar2ego, ego2global = np.asarray(meta["lidar"]["lidar2ego"]), np.asarray(meta["ego2global"])
    cams = {}
    for name in CAMERAS:
        cam = meta["cameras"][name]
        cam2lidar, cam2ego = np.linalg.inv(np.asarray(cam["lidar2cam"])), np.asarray(cam["cam2ego"])
        cams[name] = {"data_path": os.path.join(DATA, cam["file"]), "cam_intrinsic": np.asarray(cam["intrinsic"]),
                      "sensor2lidar_rotation": cam2lidar[:3, :3], "sensor2lidar_translation": cam2lidar[:3, 3],
                      "sensor2ego_rotation": _quaternion(cam2ego), "sensor2ego_translation": cam2ego[:3, 3].tolist()}
    boxes = np.array([b["center"] + b["size_lwh"] + [b["yaw"]] for b in meta["boxes"]])
    base = {
        "lidar_path": os.path.join(DATA, meta["lidar"]["file"]), "sweeps": [],
        "lidar2ego_translation": lidar2ego[:3, 3].tolist(), "lidar2ego_rotation": _quaternion(lidar2ego),
        "ego2global_translation": ego2global[:3, 3].tolist(), "ego2global_rotation": _quaternion(ego2global),
        "cams": cams, "gt_boxes": boxes_to_legacy(boxes), "gt_names": np.array([b["name"] for b in meta["boxes"]]),
        "gt_velocity": np.array([b["velocity"] for b in meta["boxes"]]),
        "num_lidar_pts": np.array([b["num_lidar_pts"] for b in meta["boxes"]]),
        "valid_flag": np.array([b["num_lidar_pts"] + b["num_radar_pts"] > 0 for b in meta["boxes"]]),
    }
    infos = [dict(base, token=f"{meta['sample_token']}-{i}", timestamp=int(meta["timestamp_s"] * 1e6) + i)
             for i in range(copies)]
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "nuscenes_infos_val.pkl"), "wb") as f:
        pickle.dump({"infos": infos, "metadata": {"version": "v1.0-mini"}}, f)
    return str(root) + os.sep


def real_data_args(root):
    return TINY + ["--dataset_root", root, "--source_image_size", "[900, 1600]"]


# ------------------------------------------------------------------------------------------------ projection
def hand_corners(center, lwh, yaw):
    """The 8 corners of a box, written out independently of ``box_corners``."""
    l, w, h = lwh
    c, s = np.cos(yaw), np.sin(yaw)
    out = []
    for dx, dy, dz in [(a, b, z) for z in (-0.5, 0.5) for a, b in ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5),
                                                                   (0.5, -0.5))]:
        x, y = dx * l, dy * w
        out.append([center[0] + c * x - s * y, center[1] + s * x + c * y, center[2] + dz * h])
    return np.array(out)


def front_camera(scale=0.25, crop=(8, 65)):
    """CAM_FRONT of the real rig, resized by ``scale`` and cropped by ``crop`` (x, y) pixels as ImageAug3D does."""
    cam = real_meta()["cameras"]["CAM_FRONT"]
    k = np.asarray(cam["intrinsic"])
    lidar2cam = np.asarray(cam["lidar2cam"])
    aug = np.eye(4)
    aug[0, 0] = aug[1, 1] = scale
    aug[:2, 3] = -np.asarray(crop, dtype=float)
    k4 = np.eye(4)
    k4[:3, :3] = k
    return k, lidar2cam, aug, k4 @ lidar2cam


def hand_project(points, k, lidar2cam, aug):
    cam = points @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
    uv = cam @ k.T
    uv = uv[:, :2] / uv[:, 2:3]
    return uv @ aug[:2, :2].T + aug[:2, 3], cam[:, 2]


def distance_to_segments(pixels, segments):
    """Distance of each pixel ``[P, 2]`` to the nearest of ``segments`` ``[S, 2, 2]``."""
    a, b = segments[None, :, 0], segments[None, :, 1]
    ab = b - a
    t = np.clip(((pixels[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(pixels[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


BOX = np.array([1.0, 14.0, -0.5, 4.2, 1.9, 1.6, 0.4, 0.0, 0.0])  # 14 m ahead of CAM_FRONT (LiDAR +y is forward)


def test_projected_corners_are_drawn_where_an_independent_projection_puts_them():
    k, lidar2cam, aug, lidar2image = front_camera()
    corners_2d, depth = hand_project(hand_corners(BOX[:3], BOX[3:6], BOX[6]), k, lidar2cam, aug)
    assert (depth > 1).all()
    image = np.zeros((160, 384, 3), np.uint8)
    assert ((corners_2d >= 2) & (corners_2d < [382, 158])).all(), "the box must lie inside the test image"

    segments, visible = vis.project_box_edges(BOX[None], lidar2image, aug, np.eye(4))
    drawn, anchors = vis.draw_box_edges(image, segments, visible, [RED])

    red = (drawn == RED).all(-1)
    for u, v in corners_2d:
        row, col = int(round(v)), int(round(u))
        assert red[row - 1:row + 2, col - 1:col + 2].any(), f"no box edge drawn at the corner ({u:.1f}, {v:.1f})"
    rows, cols = np.nonzero(red)
    edges = corners_2d[vis.BOX_EDGES]
    assert distance_to_segments(np.stack([cols, rows], 1).astype(float), edges).max() <= 1.5
    assert red.sum() > 100 and not red[0, 0]
    assert anchors[0][1] == pytest.approx(corners_2d[:, 1].min(), abs=1e-6)


def test_the_lidar_augmentation_is_undone_before_projecting():
    _, _, aug, lidar2image = front_camera()
    theta, scale = 0.3, 1.05
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    lidar_aug = np.eye(4)
    lidar_aug[:3, :3] = scale * rot
    lidar_aug[:3, 3] = [0.5, -0.2, 0.1]
    augmented = BOX.copy()
    augmented[:3] = scale * rot @ BOX[:3] + lidar_aug[:3, 3]
    augmented[3:6] *= scale
    augmented[6] += theta

    plain, _ = vis.project_box_edges(BOX[None], lidar2image, aug, np.eye(4))
    undone, _ = vis.project_box_edges(augmented[None], lidar2image, aug, lidar_aug)
    assert np.abs(undone - plain).max() < 1e-6


def test_edges_crossing_the_camera_plane_are_clipped_at_the_near_depth():
    k, lidar2cam, aug, lidar2image = front_camera()
    cam_position = np.linalg.inv(lidar2cam)[:3, 3]
    behind = BOX.copy()
    behind[:2] = cam_position[:2] - [0.0, 8.0]
    _, visible = vis.project_box_edges(behind[None], lidar2image, aug)
    assert not visible.any()

    straddling = BOX.copy()
    straddling[:3] = cam_position + [0.0, 0.5, 0.0]
    straddling[3:7] = [6.0, 2.0, 1.0, np.pi / 2]  # long axis along the camera's viewing direction
    segments, visible = vis.project_box_edges(straddling[None], lidar2image, aug)
    corners = hand_corners(straddling[:3], straddling[3:6], straddling[6])
    _, depth = hand_project(corners, k, lidar2cam, aug)
    crossing = 0
    for (i, j), seg, shown in zip(vis.BOX_EDGES, segments[0], visible[0]):
        d_i, d_j = depth[i], depth[j]
        assert shown == (max(d_i, d_j) > vis.NEAR)
        if shown and min(d_i, d_j) < vis.NEAR:
            crossing += 1
            front, back = (i, j) if d_i > d_j else (j, i)
            point = corners[front] + (depth[front] - vis.NEAR) / (depth[front] - depth[back]) * (
                corners[back] - corners[front])
            expected, point_depth = hand_project(point[None], k, lidar2cam, aug)
            assert point_depth[0] == pytest.approx(vis.NEAR)
            clipped = seg[1] if front == i else seg[0]
            assert np.allclose(clipped, expected[0], atol=1e-4)
    assert crossing == 4


def test_denormalize_inverts_image_normalize():
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    normalize = ImageNormalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    img = normalize({"img": [Image.fromarray(p) for p in pixels]})["img"]
    assert np.array_equal(vis.denormalize_images(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), pixels)


# ---------------------------------------------------------------------------------------------------- BEV panel
def bev_view(front_axis, gt_boxes):
    """A view with no points whose front camera looks along ``front_axis`` (LiDAR frame)."""
    camera2lidar = np.repeat(np.eye(4)[None], 6, 0)
    camera2lidar[0, :3, 2] = front_axis
    return vis.SampleView(token="t", images=np.zeros((6, 8, 16, 3), np.uint8), points=np.zeros((0, 5)),
                          gt_boxes=np.asarray(gt_boxes, dtype=np.float64), gt_labels=np.zeros(len(gt_boxes), int),
                          lidar2image=camera2lidar, img_aug_matrix=camera2lidar, lidar_aug_matrix=np.eye(4),
                          camera2lidar=camera2lidar)


def centroid_of(image, color, tol=60):
    mask = (np.abs(image[..., :3].astype(int) - np.asarray(color)) <= tol).all(-1)
    assert mask.sum() > 5, f"colour {color} not found"
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def render_bev(view):
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    vis.draw_bev_panel(ax, view, ["car"], [-30, -30, -5, 30, 30, 3])
    ax.get_legend().remove()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


@pytest.mark.parametrize("front_axis, ahead, right", [
    ((0.0, 1.0, 0.0), (0.0, 20.0), (15.0, 0.0)),    # nuScenes LIDAR_TOP: +y forward, +x right
    ((1.0, 0.0, 0.0), (20.0, 0.0), (0.0, -15.0)),   # a rig with +x forward: +y is left
])
def test_bev_panel_puts_the_front_camera_direction_up(front_axis, ahead, right):
    for target, check in ((ahead, "above"), (right, "right")):
        box = [target[0], target[1], -1.0, 4.0, 4.0, 1.5, 0.0, 0.0, 0.0]
        image = render_bev(bev_view(front_axis, [box]))
        box_row, box_col = centroid_of(image, vis.GT_COLOR)
        ego_row, ego_col = centroid_of(image, vis.EGO_COLOR)
        if check == "above":
            assert box_row < ego_row - 50 and abs(box_col - ego_col) < 5
        else:
            assert box_col > ego_col + 50 and abs(box_row - ego_row) < 5


def test_bev_frame_follows_the_real_rig():
    camera2lidar = np.linalg.inv(np.asarray(real_meta()["cameras"]["CAM_FRONT"]["lidar2cam"]))
    assert vis.BevFrame.from_front_camera(camera2lidar) == vis.BevFrame(forward=1, forward_sign=1, lateral=0,
                                                                         lateral_sign=1)


def test_render_sample_on_a_fabricated_batch_with_predictions(tmp_path):
    batch = make_batch(1, image_size=(32, 88))
    prediction = {"boxes_3d": torch.tensor([[5.0, 2.0, -1.0, 4.5, 1.9, 1.6, 0.3, 0.0, 0.0],
                                            [1.0, 9.0, -1.0, 4.0, 1.8, 1.5, 1.6, 0.0, 0.0]]),
                  "scores_3d": torch.tensor([0.9, 0.1]), "labels_3d": torch.tensor([0, 8])}
    view = vis.sample_view(batch, 0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], prediction)
    fig = vis.render_sample(view, ["car"] + ["x"] * 7 + ["pedestrian", "cone"], [-12, -12, -5, 12, 12, 3],
                            score_thr=0.3)
    bev = fig.axes[6]
    legend = [t.get_text() for t in bev.get_legend().get_texts()]
    assert legend == ["ground truth", "car"]  # the 0.1 pedestrian is below the threshold
    camera_legend = fig.axes[7].get_legend()  # for the camera panels, whose labels may be dropped where they collide
    assert [t.get_text() for t in camera_legend.get_texts()] == ["ground truth", "car"]
    assert [tuple(h.get_color()) for h in camera_legend.legend_handles] == [
        tuple(c / 255 for c in vis.GT_COLOR), tuple(c / 255 for c in vis.class_color(0))]
    assert [ax.get_title() for ax in fig.axes[:6]] == [n for row in vis.CAMERA_GRID for n in row]
    path = tmp_path / "sample.png"
    vis.save_figure(fig, path)
    assert Image.open(path).size[0] > 1000


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_draws_one_png_per_sample_with_ground_truth_only(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data", copies=2)
    out = tmp_path / "vis"
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    code = load_tool("visualize").main([config, "none", "--samples", "2", "--out-dir", str(out)]
                                       + real_data_args(root))
    assert code == 0
    files = sorted(os.listdir(out))
    token = real_meta()["sample_token"]
    assert files == [f"00000_{token}-0.png", f"00001_{token}-1.png"]
    image = np.asarray(Image.open(out / files[0]).convert("RGB"))
    assert image.shape[0] > 800 and image.shape[1] > 1000
    centroid_of(image, vis.GT_COLOR, tol=30)  # the real frame's boxes are drawn
    assert str(out) in capsys.readouterr().out


def test_cli_draws_the_predictions_of_a_checkpoint(tmp_path, monkeypatch):
    import mmdet3d.models  # noqa: F401
    from mmdet3d.registry import MODELS

    root = write_real_frame_infos(tmp_path / "data")
    args = real_data_args(root) + ["--model.heads.object.test_cfg.score_threshold", "0.0"]
    model = MODELS.build(tiny_config("camera_lss.yaml", *args[len(TINY):]).model)
    checkpoint = tmp_path / "model.pth"
    torch.save({"state_dict": model.state_dict()}, checkpoint)

    views = []
    render = vis.render_sample
    monkeypatch.setattr(vis, "render_sample", lambda view, *a, **k: views.append(view) or render(view, *a, **k))
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    code = load_tool("visualize").main([config, str(checkpoint), "--samples", "1", "--out-dir", str(tmp_path / "v"),
                                        "--score-thr", "0.0"] + args)
    assert code == 0 and len(os.listdir(tmp_path / "v")) == 1
    assert views[0].pred_boxes.shape[1] == 9 and len(views[0].pred_boxes) > 0
    assert len(views[0].pred_scores) == len(views[0].pred_labels) == len(views[0].pred_boxes)


def test_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    root = write_real_frame_infos(tmp_path / "data")
    config = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")
    missing = str(tmp_path / "nope.pth")
    code = load_tool("visualize").main([config, missing, "--out-dir", str(tmp_path / "v")] + real_data_args(root))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and missing in err


def test_overlapping_labels_keep_the_highest_score_only():
    from mmdet3d.analysis.visualization import label_slots
    anchors = [(10, 50), (12, 52), None, (100, 50), (14, 80)]
    texts = ["car 0.40", "truck 0.90", "bus 0.99", "car 0.30", None]
    # 5 px per character, 10 px high: the first two overlap (the truck wins), the third has no anchor, the fourth is
    # far right, the fifth has no text (a ground-truth box)
    assert label_slots(anchors, texts, [0.4, 0.9, 0.99, 0.3, 0.0], 5.0, 10.0) == [1, 3]
    assert label_slots([(0, 10), (0, 30)], ["a", "b"], [1.0, 2.0], 5.0, 10.0) == [1, 0]
