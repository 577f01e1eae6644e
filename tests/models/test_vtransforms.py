import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet3d.models.vtransforms import DepthLSSTransform, LSSTransform, OracleDepthLSSTransform
from mmdet3d.models.vtransforms.oracle_depth import one_hot_depth
from mmdet3d.ops import BEVPoolPlan
from mmdet3d.registry import MODELS

DATA = Path(__file__).parents[1] / "data"
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
PAPER = dict(in_channels=256, out_channels=80, image_size=[256, 704], feature_size=[32, 88], xbound=[-54.0, 54.0, 0.3],
             ybound=[-54.0, 54.0, 0.3], zbound=[-10.0, 10.0, 20.0], dbound=[1.0, 60.0, 0.5], downsample=2)
SMALL = dict(in_channels=16, out_channels=8, image_size=[64, 176], feature_size=[8, 22], xbound=[-24.0, 24.0, 0.8],
             ybound=[-24.0, 24.0, 0.8], zbound=[-10.0, 10.0, 20.0], dbound=[1.0, 30.0, 1.0], downsample=2)
# camera (x right, y down, z forward) -> LiDAR (x forward, y left, z up) for a camera looking along +x / +y
FACING_X = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
FACING_Y = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)


def homogeneous(rot=np.eye(3), trans=(0, 0, 0)):
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def image_aug(scale, crop_xy, flip_width=None):
    """Resize by ``scale``, crop at ``crop_xy`` and optionally mirror a ``flip_width``-wide image (ImageAug3D)."""
    m = np.eye(4)
    m[:2, :2] *= scale
    m[:2, 3] = -np.asarray(crop_xy, dtype=np.float64)
    if flip_width is not None:
        m[0, :] *= -1
        m[0, 3] += flip_width - 1
    return m


def tensors(*arrays):
    return [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in arrays]


def test_frustum_paper_config():
    vt = DepthLSSTransform(**PAPER)
    assert vt.frustum.shape == (118, 32, 88, 3) and vt.D == 118 and vt.grid_size == (360, 360, 1)
    f = vt.frustum
    assert f[0, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert f[-1, -1, -1].tolist() == [703.0, 255.0, 59.5]
    torch.testing.assert_close(f[:, 0, 1, 0], torch.full((118,), 703.0 / 87))
    assert "frustum" not in vt.state_dict()


def test_get_geometry_closed_form():
    """Frustum points through undo-image-aug, K^-1, camera2lidar and the LiDAR augmentation, written out by hand."""
    vt = LSSTransform(**SMALL)
    f, cx, cy = 120.0, 87.5, 31.5
    intrinsics = homogeneous(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]))
    cams = [homogeneous(FACING_X, (1.0, 0.2, 1.6)), homogeneous(FACING_Y, (0.3, 0.9, 1.5))]
    augs = [image_aug(0.5, (10, 4)), image_aug(0.8, (3, 30), flip_width=176)]
    lidar_aug = homogeneous(rot_z(0.3) @ np.diag([1.0, -1.0, 1.0]) * 1.05, (0.5, -0.2, 0.1))
    geom = vt.get_geometry(*tensors([cams], [[intrinsics] * 2], [augs], [lidar_aug]))
    assert geom.shape == (1, 2, 29, 8, 22, 3)

    u, v, d = (vt.frustum[..., i].double().numpy() for i in range(3))
    for n in range(2):
        aug = augs[n]
        # undo u' = a u + b (a = +-scale): u = (u' - b) / a
        u0 = (u - aug[0, 3]) / aug[0, 0]
        v0 = (v - aug[1, 3]) / aug[1, 1]
        cam_pts = np.stack([(u0 - cx) * d / f, (v0 - cy) * d / f, d], -1)
        lidar = cam_pts @ cams[n][:3, :3].T + cams[n][:3, 3]
        lidar = lidar @ lidar_aug[:3, :3].T + lidar_aug[:3, 3]
        np.testing.assert_allclose(geom[0, n].double().numpy(), lidar, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("facing,axis", [(FACING_X, 0), (FACING_Y, 1)])
def test_bev_axis_convention(facing, axis):
    """A feature 21 m ahead of a camera looking along +x (+y) lands at a row (column) index above the centre."""
    vt = LSSTransform(**SMALL)
    row, col = 4, 11
    cx, cy = float(vt.frustum[0, 0, col, 0]), float(vt.frustum[0, row, 0, 1])  # principal point at that pixel
    intrinsics = homogeneous(np.array([[100.0, 0, cx], [0, 100.0, cy], [0, 0, 1]]))
    offset = np.zeros(3)
    offset[1 - axis] = 0.4  # half a cell sideways, away from the cell border at 0
    geom = vt.get_geometry(*tensors([[homogeneous(facing, offset)]], [[intrinsics]], [[np.eye(4)]], [np.eye(4)]))
    depth = torch.zeros(1, vt.D, *vt.feature_size)
    feats = torch.zeros(1, 1, *vt.feature_size)
    depth[0, 20, row, col] = 1.0  # bin 20 = 21 m
    feats[0, 0, row, col] = 1.0
    bev = vt.bev_pool(geom, depth, feats)[0, 0]
    assert bev.shape == (60, 60)
    cells = torch.nonzero(bev)
    assert cells.shape[0] == 1 and bev.sum() == 1.0
    expected = [30, 30]
    expected[axis] = int((21.0 + 24.0) // 0.8)
    assert cells[0].tolist() == expected and expected[axis] > 30


def load_sample():
    info = json.loads((DATA / "sample.json").read_text())
    points = np.fromfile(DATA / info["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    intrinsics, lidar2cam = [], []
    for name in CAMERAS:
        cam = info["cameras"][name]
        intrinsics.append(homogeneous(np.array(cam["intrinsic"])))
        lidar2cam.append(np.array(cam["lidar2cam"], dtype=np.float64))
    return points, np.stack(intrinsics), np.stack(lidar2cam)


# the test pipeline's image augmentation: resize 0.48 (1600x900 -> 768x432), crop (32, 176, 736, 432)
TEST_AUG = image_aug(0.48, (32, 176))
LIDAR_AUG = homogeneous(rot_z(0.2) @ np.diag([1.0, -1.0, 1.0]) * 1.03)


def project(points, intrinsics, lidar2cam, img_aug):
    """Independent float64 projection: per camera (u', v') in the augmented image and the depth, each [N, P]."""
    xyz1 = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], 1)
    cam = np.einsum("nij,pj->npi", lidar2cam, xyz1)[..., :3]
    depth = cam[..., 2]
    uvw = np.einsum("nij,npj->npi", intrinsics[:, :3, :3], cam)
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[..., 0] / depth, uvw[..., 1] / depth
    return (img_aug[0, 0] * u + img_aug[0, 1] * v + img_aug[0, 3],
            img_aug[1, 0] * u + img_aug[1, 1] * v + img_aug[1, 3], depth)


def test_depth_image_on_real_sample():
    points, intrinsics, lidar2cam = load_sample()
    points_aug = points.copy()
    points_aug[:, :3] = points[:, :3] @ LIDAR_AUG[:3, :3].T.astype(np.float32)
    vt = DepthLSSTransform(**PAPER)
    pts = torch.from_numpy(points_aug)
    before = pts.clone()
    lidar2image, img_aug, lidar_aug = tensors([intrinsics @ lidar2cam], [[TEST_AUG] * 6], [LIDAR_AUG])
    depth = vt.depth_image([pts], lidar2image, img_aug, lidar_aug)
    assert depth.shape == (1, 6, 1, 256, 704)
    assert torch.equal(pts, before)

    u, v, d = project(points, intrinsics, lidar2cam, TEST_AUG)
    col, row = np.floor(u + 0.5), np.floor(v + 0.5)
    keep = (d > 0) & (col >= 0) & (col < 704) & (row >= 0) & (row < 256)
    expected = np.full((6, 256, 704), np.inf)
    cams = np.broadcast_to(np.arange(6)[:, None], d.shape)
    np.minimum.at(expected, (cams[keep], row[keep].astype(int), col[keep].astype(int)), d[keep])
    expected[np.isinf(expected)] = 0
    ours = depth[0, :, 0].double().numpy()
    assert (expected > 0).sum() > 10000  # the crop keeps the lower 256 rows of each 432-row image
    hit = (ours > 0) & (expected > 0)
    # float32 vs float64 may round a point at a pixel border to the other side
    assert ((ours > 0) != (expected > 0)).sum() <= 2e-3 * (expected > 0).sum()
    assert np.isclose(ours[hit], expected[hit], rtol=1e-4, atol=1e-3).mean() > 0.998
    assert ours.min() >= 0 and ours.max() < 120


def test_depth_lss_geometry_on_real_sample():
    """One-hot depth at a LiDAR point's depth bin and pixel, feature 1 there: the pooled cell contains the point."""
    points, intrinsics, lidar2cam = load_sample()
    vt = DepthLSSTransform(**PAPER)
    u, v, d = project(points, intrinsics, lidar2cam, TEST_AUG)
    xs, ys, ds = vt.frustum[0, 0, :, 0].numpy(), vt.frustum[0, :, 0, 1].numpy(), vt.frustum[:, 0, 0, 2].numpy()
    with np.errstate(invalid="ignore"):
        j = np.rint(u / xs[1]).astype(np.int64, copy=False)
        i = np.rint(v / ys[1]).astype(np.int64, copy=False)
        k = np.rint((d - ds[0]) / (ds[1] - ds[0])).astype(np.int64, copy=False)
    valid = (d > 1) & (j >= 0) & (j < 88) & (i >= 0) & (i < 32) & (k >= 0) & (k < 118)
    j, i, k = np.where(valid, j, 0), np.where(valid, i, 0), np.where(valid, k, 0)
    aug_xy = points[:, :3].astype(np.float64) @ LIDAR_AUG[:3, :3].T
    inside = (np.abs(aug_xy[:, :2]) < 53.5).all(1)
    close = valid & inside & (np.abs(xs[j] - u) < 0.75) & (np.abs(ys[i] - v) < 0.75) & (np.abs(ds[k] - d) < 0.05)
    chosen, used = [], set()
    for n, p in zip(*np.nonzero(close)):
        if (n, i[n, p], j[n, p]) not in used and sum(c[0] == n for c in chosen) < 4:
            used.add((n, i[n, p], j[n, p]))
            chosen.append((n, p))
    assert len({n for n, _ in chosen}) == 6 and len(chosen) >= 20

    depth = torch.zeros(6, 118, 32, 88)
    feats = torch.zeros(6, len(chosen), 32, 88)
    for q, (n, p) in enumerate(chosen):
        depth[n, k[n, p], i[n, p], j[n, p]] = 1.0
        feats[n, q, i[n, p], j[n, p]] = 1.0
    geom = vt.get_geometry(*tensors([np.linalg.inv(lidar2cam)], [intrinsics], [[TEST_AUG] * 6], [LIDAR_AUG]))
    bev = vt.bev_pool(geom, depth, feats)[0]
    assert bev.shape == (len(chosen), 360, 360)

    exact = 0
    for q, (n, p) in enumerate(chosen):
        cells = torch.nonzero(bev[q])
        assert cells.shape[0] == 1 and float(bev[q].sum()) == pytest.approx(1.0)
        cell = cells[0].numpy()
        lo = -54.0 + 0.3 * cell
        x, y = aug_xy[p, :2]
        # the frustum point is within 0.75 px (of the 0.48-scaled image) and 0.05 m of depth of the LiDAR point
        focal = intrinsics[n][0, 0]
        tol = (math.sqrt(2) * 0.75 / 0.48 / focal * d[n, p] + 0.05) * 1.03 + 1e-3
        assert lo[0] - tol <= x <= lo[0] + 0.3 + tol and lo[1] - tol <= y <= lo[1] + 0.3 + tol, (q, x, y, cell)
        exact += bool(lo[0] <= x < lo[0] + 0.3 and lo[1] <= y < lo[1] + 0.3)
    assert exact >= 0.5 * len(chosen)


def small_inputs(batch=2, num_cams=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    f, cx, cy = 100.0, 87.5, 31.5
    intrinsics = homogeneous(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]))
    cams = [homogeneous(FACING_X, (1.0, 0.0, 1.5)), homogeneous(FACING_Y, (0.0, 0.5, 1.5))][:num_cams]
    lidar2cam = [np.linalg.inv(c) for c in cams]
    camera2lidar, lidar2camera, intr, l2i, img_aug = tensors(
        [cams] * batch, [lidar2cam] * batch, [[intrinsics] * num_cams] * batch,
        [[intrinsics @ m for m in lidar2cam]] * batch, [[image_aug(1.0, (0, 0))] * num_cams] * batch)
    eye = torch.eye(4).repeat(batch, 1, 1)
    points = [torch.cat([torch.rand(500, 3, generator=g) * torch.tensor([40.0, 40.0, 3.0]) - torch.tensor(
        [20.0, 20.0, 1.0]), torch.rand(500, 2, generator=g)], 1) for _ in range(batch)]
    img = torch.randn(batch, num_cams, SMALL["in_channels"], *SMALL["feature_size"], generator=g)
    # LiDAR frame = ego frame here
    return dict(img=img, points=points, camera2ego=camera2lidar, lidar2ego=eye, lidar2camera=lidar2camera,
                lidar2image=l2i, camera_intrinsics=intr, camera2lidar=camera2lidar, img_aug_matrix=img_aug,
                lidar_aug_matrix=eye.clone(), metas=[{}] * batch)


@pytest.mark.parametrize("kind", ["LSSTransform", "DepthLSSTransform"])
def test_view_transform_small_forward(kind):
    torch.manual_seed(0)
    vt = MODELS.build(dict(type=kind, **SMALL)).eval()
    inputs = small_inputs()
    points_before = [p.clone() for p in inputs["points"]]
    with torch.no_grad():
        bev, depth = vt(**inputs)
    assert bev.shape == (2, 8, 30, 30) and depth.shape == (4, 29, 8, 22)
    torch.testing.assert_close(depth.sum(1), torch.ones(4, 8, 22))
    assert (bev >= 0).all() and bev.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(points_before, inputs["points"]))
    # sample 1 gets only its own cameras: changing sample 0's image features leaves it untouched
    inputs["img"][0] += 1.0
    with torch.no_grad():
        bev2, _ = vt(**inputs)
    torch.testing.assert_close(bev2[1], bev[1])
    assert not torch.allclose(bev2[0], bev[0])


def test_depth_lss_uses_points_and_backpropagates():
    torch.manual_seed(0)
    vt = DepthLSSTransform(**SMALL).train()
    inputs = small_inputs()
    inputs["img"].requires_grad_(True)
    bev, _ = vt(**inputs)
    bev.sum().backward()
    assert inputs["img"].grad.abs().sum() > 0 and vt.dtransform[0].weight.grad.abs().sum() > 0
    vt.eval()
    with torch.no_grad():
        ref, _ = vt(**inputs)
        inputs["points"] = [p[:10] for p in inputs["points"]]
        fewer, _ = vt(**inputs)
    assert not torch.allclose(ref, fewer)
    with pytest.raises(ValueError, match="points are required"):
        vt(**{**inputs, "points": None})


@pytest.mark.parametrize("kind", ["LSSTransform", "DepthLSSTransform"])
def test_outer_product_pooling_gives_the_default_map_and_gradients(kind):
    """BEVFusion's outer-product path and the default depth-weighted pooling are two computations of one sum; two
    z cells check that the channel order (z-major) agrees too."""
    cfg = dict(type=kind, **{**SMALL, "zbound": [-10.0, 10.0, 10.0], "downsample": 1})
    torch.manual_seed(0)
    default = MODELS.build(cfg).train()
    outer = MODELS.build(dict(cfg, pooling="outer_product")).train()
    outer.load_state_dict(default.state_dict())
    results = []
    for vt in (default, outer):
        inputs = small_inputs()
        inputs["img"].requires_grad_(True)
        bev, _ = vt(**inputs)
        (bev * torch.linspace(0.5, 1.5, bev.shape[1]).view(1, -1, 1, 1)).sum().backward()
        results.append((bev, inputs["img"].grad))
    assert results[0][0].shape == (2, 16, 60, 60) and results[0][0][:, 8:].abs().sum() > 0
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        MODELS.build(dict(cfg, pooling="cumsum"))


def test_view_transform_input_checks():
    with pytest.raises(ValueError, match="stride 8"):
        DepthLSSTransform(**{**SMALL, "feature_size": [16, 44]})
    with pytest.raises(ValueError, match="xbound"):
        LSSTransform(**{**SMALL, "xbound": [-24.0, 24.0, 0.7]})
    vt = LSSTransform(**SMALL)
    inputs = small_inputs()
    with pytest.raises(ValueError, match="img features"):
        vt(**{**inputs, "img": inputs["img"][:, :, :4]})
    with pytest.raises(ValueError, match="lidar_aug_matrix"):
        vt(**{**inputs, "lidar_aug_matrix": inputs["lidar_aug_matrix"][:, None]})


def test_depth_lss_key_names():
    keys = set(DepthLSSTransform(**SMALL).state_dict())
    assert {"dtransform.0.weight", "dtransform.0.bias", "dtransform.3.weight", "dtransform.7.running_var",
            "depthnet.0.weight", "depthnet.4.running_mean", "depthnet.6.weight", "depthnet.6.bias",
            "downsample.0.weight", "downsample.3.weight", "downsample.7.running_var"} <= keys
    assert "downsample.0.bias" not in keys
    assert DepthLSSTransform(**SMALL).depthnet[6].out_channels == 29 + 8


@pytest.mark.parametrize("convs", [0, 2, 4])
def test_lss_depthnet_sees_convs_pixels_around(convs):
    """Each conv3x3 widens what one depth distribution sees by one feature pixel on every side."""
    torch.manual_seed(0)
    vt = LSSTransform(**SMALL, depthnet_convs=convs).eval()
    feats = torch.randn(1, 16, 8, 22)
    reach = []
    for offset in range(6):
        bumped = feats.clone()
        bumped[0, :, 4, 10 + offset] += 5.0
        with torch.no_grad():
            changed = (vt.depthnet(bumped)[0, :vt.D, 4, 10] - vt.depthnet(feats)[0, :vt.D, 4, 10]).abs().max()
        reach.append(bool(changed > 1e-6))
    assert reach == [offset <= convs for offset in range(6)]


def test_lss_depthnet_layouts():
    assert set(LSSTransform(**SMALL).state_dict()) >= {"depthnet.weight", "depthnet.bias"}
    lss_keys = {k for k in LSSTransform(**SMALL, depthnet_convs=2).state_dict() if k.startswith("depthnet.")}
    depth_lss = DepthLSSTransform(**SMALL).state_dict()
    assert lss_keys == {k for k in depth_lss if k.startswith("depthnet.")}
    assert DepthLSSTransform(**SMALL, depthnet_convs=3).depthnet[9].out_channels == 29 + 8
    with pytest.raises(ValueError, match="depthnet_convs"):
        LSSTransform(**SMALL, depthnet_convs=-1)


def test_above_ground_prior_rules_out_the_bins_below_the_ground_by_hand():
    """Level cameras 1.5 m above the ground (f = 100, cy = 31.5): the ray of image row v > cy reaches 0.5 m below
    the ground at depth 2.0 * f / (v - cy); every bin beyond it, and none above the horizon, is ruled out."""
    vt = LSSTransform(**SMALL, depth_prior="above_ground", ground_margin=0.5)
    inputs = small_inputs(batch=1)
    offset = vt.prior_offset(inputs["camera2ego"], inputs["camera_intrinsics"], inputs["img_aug_matrix"])
    rows, depths = vt.frustum[0, :, 0, 1], vt.frustum[:, 0, 0, 2]
    below = (rows[None] > 31.5) & (depths[:, None] > 2.0 * 100.0 / (rows[None] - 31.5))
    assert below.any() and not below.all()
    torch.testing.assert_close(offset, (-30.0 * below.float())[None, :, :, None].expand(2, -1, -1, 22))
    assert LSSTransform(**SMALL).prior_offset(*(inputs[k] for k in ("camera2ego", "camera_intrinsics",
                                                                    "img_aug_matrix"))) is None
    with pytest.raises(ValueError, match="depth_prior"):
        LSSTransform(**SMALL, depth_prior="ground")


@pytest.mark.parametrize("kind", ["LSSTransform", "DepthLSSTransform"])
def test_above_ground_prior_in_forward(kind):
    torch.manual_seed(0)
    vt = MODELS.build(dict(type=kind, **SMALL, depth_prior="above_ground")).eval()
    inputs = small_inputs()
    with torch.no_grad():
        _, depth = vt(**inputs)
        # Cameras 5 m under the ground: every bin is ruled out, the distributions stay finite.
        sunk = inputs["camera2ego"].clone()
        sunk[..., 2, 3] = -5.0
        _, sunk_depth = vt(**{**inputs, "camera2ego": sunk})
    assert depth[:, :, -1].sum(1).min() > 0.99 and (depth[:, -1, -1] < 1e-12).all()
    assert (depth[:, :, 0] > 1e-12).all()  # the top row looks above the horizon
    assert torch.isfinite(sunk_depth).all()
    torch.testing.assert_close(sunk_depth.sum(1), torch.ones(4, 8, 22))


def test_depth_lss_paper_config_shapes():
    points, intrinsics, lidar2cam = load_sample()
    vt = DepthLSSTransform(**PAPER).eval()
    camera2lidar, intr, l2i, img_aug, lidar_aug = tensors([np.linalg.inv(lidar2cam)], [intrinsics],
                                                          [intrinsics @ lidar2cam], [[TEST_AUG] * 6], [np.eye(4)])
    with torch.no_grad():
        bev, depth = vt(torch.randn(1, 6, 256, 32, 88), [torch.from_numpy(points)], camera2lidar, lidar_aug,
                        camera2lidar, l2i, intr, camera2lidar, img_aug, lidar_aug, [{}])
    assert bev.shape == (1, 80, 180, 180) and depth.shape == (6, 118, 32, 88)


def frustum_points_float64(vt, intrinsics, lidar2cam, img_aug):
    """Independent float64 lift of every frustum entry to the LiDAR frame, [N, D, fH, fW, 3]."""
    frustum = vt.frustum.double().numpy()
    uv1 = np.concatenate([frustum[..., :2], np.ones_like(frustum[..., :1])], -1)
    affine = np.linalg.inv(img_aug[[0, 1, 3]][:, [0, 1, 3]])  # the 2D part of the image augmentation
    uv = uv1 @ affine.T
    d = frustum[..., 2:3]
    cam = np.concatenate([uv[..., :2] * d, d], -1)
    out = []
    for k, l2c in zip(intrinsics, lidar2cam):
        ray = cam @ np.linalg.inv(k[:3, :3]).T
        c2l = np.linalg.inv(l2c)
        out.append(ray @ c2l[:3, :3].T + c2l[:3, 3])
    return np.stack(out)


@pytest.mark.parametrize("rule", ["trunc", "floor"])
def test_points_kept_on_the_real_frame_follow_the_cell_rule(rule):
    """Paper config on the real frame: the plan keeps exactly the frustum points whose cell coordinate lies in
    (-1, n) on every axis (trunc, BEVFusion) or in [0, n) (floor), counted independently in float64."""
    _, intrinsics, lidar2cam = load_sample()
    vt = DepthLSSTransform(**PAPER, cell_rule=rule)
    geom = vt.get_geometry(*tensors([np.linalg.inv(lidar2cam)], [intrinsics], [[TEST_AUG] * 6], [np.eye(4)]))
    plan = BEVPoolPlan(vt.voxel_coords(geom), 1, vt.grid_size)
    kept = int((plan.cell_of_entry >= 0).sum())

    scaled = (frustum_points_float64(vt, intrinsics, lidar2cam, TEST_AUG) - np.array([-54.0, -54.0, -10.0])) \
        / np.array([0.3, 0.3, 20.0])
    low = -1.0 if rule == "trunc" else 0.0
    inside = ((scaled > low) if rule == "trunc" else (scaled >= low)) & (scaled < np.array([360, 360, 1]))
    expected = int(inside.all(-1).sum())
    total = scaled[..., 0].size
    # float32 geometry may put a point within rounding distance of a border on the other side
    assert abs(kept - expected) <= 1e-5 * total
    if rule == "trunc":
        floor_kept = int((((scaled >= 0) & (scaled < np.array([360, 360, 1]))).all(-1)).sum())
        assert expected - floor_kept > 0.1 * total  # the z sliver below -10 m alone is > 10 % of the frustum


def test_one_hot_depth_by_hand():
    """2x2 cells of a 4x4 depth image: nearest point per cell, bin = floor((d - 1) / 2), empty or out-of-range = 0."""
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 0], img[0, 0, 1, 1] = 6.5, 4.2   # cell (0, 0): nearest 4.2 -> bin 1
    img[0, 0, 3, 2] = 8.9                          # cell (1, 1): bin 3
    img[0, 0, 2, 0] = 30.0                         # cell (1, 0): beyond dbound -> nothing
    out = one_hot_depth(img, (2, 2), (1.0, 9.0, 2.0), 4)
    expected = torch.zeros(1, 4, 2, 2)
    expected[0, 1, 0, 0] = expected[0, 3, 1, 1] = 1.0
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="multiple"):
        one_hot_depth(img, (3, 2), (1.0, 9.0, 2.0), 4)


def test_oracle_depth_lifts_a_point_to_its_own_cell():
    """One LiDAR point 21.3 m ahead of a camera looking along +x: its feature cell's context lands in the BEV cell of
    the point (x = 21.3 m -> row (21.3 + 24) // 0.8), nothing else does."""
    vt = OracleDepthLSSTransform(**{**SMALL, "downsample": 1})
    row, col = 4, 11
    cx, cy = float(vt.frustum[0, 0, col, 0]), float(vt.frustum[0, row, 0, 1])
    intrinsics = homogeneous(np.array([[100.0, 0, cx], [0, 100.0, cy], [0, 0, 1]]))
    camera2lidar = homogeneous(FACING_X, (0.0, 0.4, 0.0))
    lidar2image = intrinsics @ np.linalg.inv(camera2lidar)
    point = torch.tensor([[21.3, 0.4, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        vt.context.weight.zero_()
        vt.context.bias.fill_(1.0)
        c2l, k, l2i, img_aug = tensors([[camera2lidar]], [[intrinsics]], [[lidar2image]], [[np.eye(4)]])
        bev, depth = vt(torch.zeros(1, 1, 16, 8, 22), [point], None, None, None, l2i, k, c2l, img_aug,
                        torch.eye(4)[None], metas=[{}])
    assert torch.nonzero(depth[0]).tolist() == [[20, row, col]]
    cells = torch.nonzero(bev[0, 0])
    assert cells.tolist() == [[int((21.3 + 24.0) // 0.8), 30]] and bev[0, 0].sum() == 1.0
    with pytest.raises(ValueError, match="points are required"):
        vt(torch.zeros(1, 1, 16, 8, 22), None, None, None, None, l2i, k, c2l, img_aug, torch.eye(4)[None], [{}])
