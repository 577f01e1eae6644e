"""The BEVFormer encoder (VARIANTS.md B.3/B.5): geometry on the real nuScenes frame, the BEV layout on the teacher's
grid, both attentions against brute-force loops, ego alignment, batch independence and gradients."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet3d.models.bevformer import BEVFormerEncoder, align_prev_bev, lidar2img, pillar_anchors, project_to_cameras
from mmdet3d.registry import MODELS

DATA = Path(__file__).parents[1] / "data"
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
PAPER_RANGE = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
TINY_RANGE = (-30.0, -22.5, -5.0, 30.0, 22.5, 3.0)  # 3 x 4 cells of 15 m


def load_sample():
    with open(DATA / "sample.json") as f:
        return json.load(f)


def real_rig(image_size):
    """(K, lidar2cam, img_aug) per camera as float64 arrays for BEVFusion's resize-to-width + bottom crop of the
    1600x900 images to ``image_size`` = (H, W)."""
    meta = load_sample()
    scale = image_size[1] / 1600.0
    aug = np.eye(4)
    aug[0, 0] = aug[1, 1] = scale
    aug[1, 3] = -(900 * scale - image_size[0])
    rig = []
    for cam in CAMERAS:
        k = np.eye(4)
        k[:3, :3] = meta["cameras"][cam]["intrinsic"]
        rig.append((k, np.asarray(meta["cameras"][cam]["lidar2cam"], dtype=np.float64), aug))
    return rig


def rig_tensors(image_size, batch):
    rig = real_rig(image_size)
    l2i = torch.tensor(np.stack([k @ l2c for k, l2c, _ in rig]), dtype=torch.float32)
    aug = torch.tensor(np.stack([a for _, _, a in rig]), dtype=torch.float32)
    return l2i[None].repeat(batch, 1, 1, 1), aug[None].repeat(batch, 1, 1, 1)


def hand_pixel(p, k, l2c, aug):
    """Augmented-image pixel (u, v) and camera depth of LiDAR point ``p``, step by step."""
    cam = l2c[:3, :3] @ np.asarray(p, dtype=np.float64) + l2c[:3, 3]
    u = k[0, 0] * cam[0] / cam[2] + k[0, 2]
    v = k[1, 1] * cam[1] / cam[2] + k[1, 2]
    return aug[0, 0] * u + aug[0, 3], aug[1, 1] * v + aug[1, 3], cam[2]


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def bilinear(feat, x, y):
    """feat [C, H, W] sampled at normalised (x, y) with pixel i's centre at (i + 0.5) / W, zeros outside."""
    _, h, w = feat.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(feat.shape[0])
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * feat[:, yy, xx]
    return out


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def linear(layer, x):
    return layer.weight.detach().double().numpy() @ x + layer.bias.detach().double().numpy()


def randomize(module, seed=0, std=0.3):
    """Random parameters everywhere, so that offsets and weights depend on the query."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_encoder(**kw):
    cfg = dict(embed_dims=8, out_channels=4, bev_h=3, bev_w=4, bev_pc_range=TINY_RANGE,
               image_size=(32, 88), num_layers=2, num_heads=2, num_levels=2, num_cams=6, num_points_in_pillar=2,
               sca_points=4, tsa_points=2, ffn_dims=16, dropout=0.0)
    cfg.update(kw)
    return BEVFormerEncoder(**cfg)


def tiny_features(batch, seed=0, channels=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 6, channels, 4, 11, generator=g), torch.randn(batch, 6, channels, 2, 6, generator=g)]


def lidar_augs():
    """Three BEV augmentations: none, a 90 degree rotation with scaling, a 1 km lift that no camera sees."""
    lifted = np.eye(4)
    lifted[2, 3] = 1000.0
    rotated = rot_z(math.pi / 2)
    rotated[:3, :3] *= 1.05
    return np.stack([np.eye(4), rotated, lifted])


# ------------------------------------------------------------------------------------------------ geometry
def test_projection_of_the_real_boxes_matches_hand_computation():
    image_size = (256, 704)
    rig = real_rig(image_size)
    centres = np.array([b["center"] for b in load_sample()["boxes"]])
    l2i, aug = rig_tensors(image_size, 1)
    uv, valid = project_to_cameras(torch.tensor(centres, dtype=torch.float32)[None],
                                   lidar2img(l2i, aug, torch.eye(4)[None]), image_size)
    assert uv.shape == (1, 6, len(centres), 2) and valid.shape == (1, 6, len(centres))
    for n, (k, l2c, a) in enumerate(rig):
        for i, p in enumerate(centres):
            u, v, depth = hand_pixel(p, k, l2c, a)
            inside = depth > 1e-5 and 0 < u < image_size[1] and 0 < v < image_size[0]
            assert bool(valid[0, n, i]) == inside, (CAMERAS[n], i)
            if depth > 0.1:  # far outside the image the coordinates are clamped to 10 image sizes
                expected = np.clip([u / image_size[1], v / image_size[0]], -10, 10)
                np.testing.assert_allclose(uv[0, n, i].numpy(), expected, rtol=1e-5, atol=2e-5)
    # the truck in front of the car (README) is seen by CAM_FRONT only, at the pixel computed by hand
    truck = [i for i, b in enumerate(load_sample()["boxes"]) if b["name"] == "truck" and b["num_lidar_pts"] == 495]
    assert valid[0, :, truck[0]].tolist() == [True, False, False, False, False, False]
    u, v, _ = hand_pixel(centres[truck[0]], *rig[0])
    assert 0 < u < 704 and 0 < v < 256


def test_lidar_augmentation_is_undone_before_the_cameras():
    image_size = (256, 704)
    l2i, aug = rig_tensors(image_size, 1)
    points = np.array([[-4.5, 15.25, 0.4], [12.0, 3.0, -1.0], [-8.0, -20.0, 0.5]])
    bev_aug = rot_z(0.4)
    bev_aug[:3, :3] *= 0.95
    bev_aug[:3, 3] = [0.3, -0.2, 0.1]
    bev_aug[1] *= -1  # a flip of y as well
    augmented = points @ bev_aug[:3, :3].T + bev_aug[:3, 3]
    uv_plain, valid_plain = project_to_cameras(torch.tensor(points, dtype=torch.float32)[None],
                                               lidar2img(l2i, aug, torch.eye(4)[None]), image_size)
    uv_aug, valid_aug = project_to_cameras(torch.tensor(augmented, dtype=torch.float32)[None],
                                           lidar2img(l2i, aug, torch.tensor(bev_aug, dtype=torch.float32)[None]),
                                           image_size)
    assert torch.equal(valid_plain, valid_aug) and valid_plain.any(1).all()
    torch.testing.assert_close(uv_aug[valid_aug], uv_plain[valid_plain], atol=1e-4, rtol=0)


def test_valid_view_mask_edges_and_behind():
    image_size = (256, 704)
    k, l2c, a = real_rig(image_size)[0]

    def unproject(u, v, depth):  # undo the resize and crop, then the intrinsics and the extrinsics
        u0, v0 = (u - a[0, 3]) / a[0, 0], (v - a[1, 3]) / a[1, 1]
        cam = np.linalg.inv(k[:3, :3]) @ np.array([u0 * depth, v0 * depth, depth])
        return (np.linalg.inv(l2c) @ np.append(cam, 1.0))[:3]

    points = [unproject(700.0, 128.0, 10.0), unproject(710.0, 128.0, 10.0), unproject(352.0, -3.0, 10.0),
              unproject(352.0, 250.0, 10.0), unproject(352.0, 128.0, -10.0)]
    l2i, aug = rig_tensors(image_size, 1)
    uv, valid = project_to_cameras(torch.tensor(np.stack(points), dtype=torch.float32)[None],
                                   lidar2img(l2i, aug, torch.eye(4)[None]), image_size)
    assert valid[0, 0].tolist() == [True, False, False, True, False]  # inside, right of, above, inside, behind
    np.testing.assert_allclose(uv[0, 0, 0].numpy(), [700 / 704, 0.5], atol=1e-4)
    np.testing.assert_allclose(uv[0, 0, 3].numpy(), [0.5, 250 / 256], atol=1e-4)
    assert valid[0, 3, 4]  # the point behind CAM_FRONT is in front of CAM_BACK
    assert uv.abs().max() <= 10  # behind a camera: bounded, not ~1e6


def test_pillar_anchors_on_the_paper_grid():
    anchors = pillar_anchors(180, 180, PAPER_RANGE, 4)
    assert anchors.shape == (180 * 180, 4, 3)
    torch.testing.assert_close(anchors[0, :, 2], torch.tensor([-4.5, -5 + 0.5 + 7 / 3, -5 + 0.5 + 14 / 3, 2.5]))
    i, j = 106, 140  # query row i runs along y, column j along x
    torch.testing.assert_close(anchors[i * 180 + j, 0, :2], torch.tensor([-54 + 140.5 * 0.6, -54 + 106.5 * 0.6]))


def test_bev_layout_on_the_teacher_grid():
    """A camera 10 km above the car looking down sees ground point (x, y) at pixel column x / 0.6 + 90 and row
    90 - y / 0.6 of a 180x180 image; a bright pixel there must land in the BEV cell of that point: row
    (x + 54) / 0.6, column (y + 54) / 0.6 of [B, C, X, Y]."""
    torch.manual_seed(0)
    enc = BEVFormerEncoder(embed_dims=8, out_channels=4, bev_h=180, bev_w=180, bev_pc_range=PAPER_RANGE,
                           image_size=(180, 180), num_layers=1, num_heads=2, num_levels=1, num_cams=1,
                           num_points_in_pillar=4, sca_points=4, tsa_points=1, ffn_dims=16, dropout=0.0).eval()
    sca = enc.layers[0].attentions[1].deformable_attention
    torch.nn.init.zeros_(sca.sampling_offsets.weight)
    torch.nn.init.zeros_(sca.sampling_offsets.bias)  # every point samples its anchor's pixel
    height, focal = 10000.0, 10000.0 / 0.6
    lidar2cam = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, height], [0, 0, 0, 1]], dtype=np.float64)
    k = np.array([[focal, 0, 90, 0], [0, focal, 90, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    l2i = torch.tensor(k @ lidar2cam, dtype=torch.float32)[None, None]
    x, y = 30.3, 9.9  # centre of the cell containing x = +30 m
    col, row = int(x / 0.6 + 90), int(90 - y / 0.6)  # the image pixel containing the point
    feats = torch.randn(1, 1, 8, 180, 180)
    bright = feats.clone()
    bright[0, 0, :, row, col] += 5.0
    args = (l2i, torch.eye(4)[None, None], torch.eye(4)[None])
    with torch.no_grad():
        out, embed = enc([feats], *args)
        out_b, embed_b = enc([bright], *args)
    assert out.shape == (1, 4, 180, 180) and embed.shape == (1, 8, 180, 180)
    diff = (embed_b - embed).abs().sum(1)[0]
    cell = (int((x + 54) / 0.6), int((y + 54) / 0.6))
    assert cell == (140, 106)
    assert divmod(int(diff.argmax()), 180) == cell
    far = diff.clone()
    far[cell[0] - 1:cell[0] + 2, cell[1] - 1:cell[1] + 2] = 0
    assert diff[cell] > 0.1 and far.max() == 0
    assert diff[cell] > 10 * diff[cell[0] - 1:cell[0] + 2, cell[1] - 1:cell[1] + 2].flatten().sort()[0][-2]
    assert (out_b - out).abs().sum(1)[0][cell] > 0


# ------------------------------------------------------------------------------------------------ attentions
def test_spatial_cross_attention_matches_brute_force():
    """Three samples with different BEV augmentations (so each camera sees different queries in each sample,
    and none in the third): every sample must use its own visible queries."""
    enc = randomize(tiny_encoder())
    b, image_size = 3, (32, 88)
    l2i, aug = rig_tensors(image_size, b)
    bev_aug = lidar_augs()
    feats = tiny_features(b)
    query = torch.randn(b, 12, 8, generator=torch.Generator().manual_seed(1))
    sca = enc.layers[0].attentions[1]
    ref_cam, mask = enc.camera_references(l2i, aug, torch.tensor(bev_aug, dtype=torch.float32))
    value, shapes, starts = enc.flatten_features(feats)
    with torch.no_grad():
        out = sca(query, value, shapes, starts, ref_cam, mask).double().numpy()

    rig = real_rig(image_size)
    att = sca.deformable_attention
    heads, dh, levels, points, anchors = 2, 4, 2, 4, 2
    cams_embeds, level_embeds = enc.cams_embeds.detach().double().numpy(), enc.level_embeds.detach().double().numpy()
    seen_by = np.zeros((b, 12), dtype=int)
    for s in range(b):
        total = np.zeros((12, 8))
        for n, (k, l2c, a) in enumerate(rig):
            maps = []
            for lvl, f in enumerate(feats):
                x = f[s, n].double().numpy() + cams_embeds[n][:, None, None] + level_embeds[lvl][:, None, None]
                maps.append(np.einsum("oc,chw->ohw", att.value_proj.weight.detach().double().numpy(), x)
                            + att.value_proj.bias.detach().double().numpy()[:, None, None])
            for q in range(12):
                i, j = divmod(q, 4)  # BEV row i along y (3 cells), column j along x (4 cells)
                refs, visible = [], False
                for d, z in enumerate([-4.5, 2.5]):
                    p = np.array([-30 + (j + 0.5) * 15, -22.5 + (i + 0.5) * 15, z, 1.0])
                    u, v, depth = hand_pixel((np.linalg.inv(bev_aug[s]) @ p)[:3], k, l2c, a)
                    refs.append((u / 88, v / 32))
                    visible |= depth > 1e-5 and 0 < u < 88 and 0 < v < 32
                if not visible:
                    continue
                seen_by[s, q] += 1
                qv = query[s, q].double().numpy()
                offsets = linear(att.sampling_offsets, qv).reshape(heads, levels, points, 2)
                logits = linear(att.attention_weights, qv).reshape(heads, levels * points)
                for h in range(heads):
                    weights = softmax(logits[h]).reshape(levels, points)
                    for lvl, (fh, fw) in enumerate([(4, 11), (2, 6)]):
                        for pt in range(points):
                            ru, rv = refs[pt % anchors]
                            su, sv = ru + offsets[h, lvl, pt, 0] / fw, rv + offsets[h, lvl, pt, 1] / fh
                            total[q, h * dh:(h + 1) * dh] += weights[lvl, pt] * bilinear(
                                maps[lvl][h * dh:(h + 1) * dh], su, sv)
        expected = np.stack([linear(sca.output_proj, total[q] / max(seen_by[s, q], 1)) for q in range(12)])
        np.testing.assert_allclose(out[s], expected + query[s].double().numpy(), atol=1e-4)
    # the case covers queries seen by two cameras, by one, and by none, and visibility that differs by sample
    assert np.array_equal(seen_by, mask.any(-1).sum(1).numpy())
    assert set(seen_by[:2].flatten()) == {0, 1, 2} and (seen_by[2] == 0).all()
    assert not np.array_equal(seen_by[0], seen_by[1])


@pytest.mark.parametrize("with_prev", [True, False])
def test_temporal_self_attention_matches_brute_force(with_prev):
    """Two samples; each must read its own previous BEV (the release reads value[:bs], mixing samples)."""
    enc = randomize(tiny_encoder(), seed=2)
    tsa = enc.layers[0].attentions[0]
    g = torch.Generator().manual_seed(3)
    query, pos = torch.randn(2, 12, 8, generator=g), torch.randn(12, 8, generator=g)
    prev = torch.randn(2, 12, 8, generator=g) if with_prev else None
    with torch.no_grad():
        out = tsa(query, pos, enc.ref_2d, (3, 4), prev).double().numpy()
    heads, dh, points = 2, 4, 2
    w_v, b_v = tsa.value_proj.weight.detach().double().numpy(), tsa.value_proj.bias.detach().double().numpy()
    for s in range(2):
        cur = query[s].double().numpy()
        before = prev[s].double().numpy() if with_prev else cur  # first frame: the current BEV twice
        frames = [(f @ w_v.T + b_v).T.reshape(8, 3, 4) for f in (before, cur)]  # [C, rows = y, cols = x]
        for q in range(12):
            i, j = divmod(q, 4)
            mixed = np.concatenate([before[q], cur[q] + pos[q].double().numpy()])
            offsets = linear(tsa.sampling_offsets, mixed).reshape(heads, 2, points, 2)
            logits = linear(tsa.attention_weights, mixed).reshape(heads, 2, points)
            acc = np.zeros(8)
            for h in range(heads):
                for t in range(2):
                    weights = softmax(logits[h, t])
                    for pt in range(points):
                        x = (j + 0.5) / 4 + offsets[h, t, pt, 0] / 4
                        y = (i + 0.5) / 3 + offsets[h, t, pt, 1] / 3
                        acc[h * dh:(h + 1) * dh] += weights[pt] * bilinear(frames[t][h * dh:(h + 1) * dh], x, y) / 2
            np.testing.assert_allclose(out[s, q], linear(tsa.output_proj, acc) + cur[q], atol=1e-5)


def test_ego_forward_by_one_cell_moves_the_previous_bev_one_cell():
    """Real lidar2ego (LiDAR +y = ego forward): driving 0.6 m forward moves a static feature one cell toward -y."""
    meta = load_sample()
    prev_e2g = torch.tensor(meta["ego2global"], dtype=torch.float64)[None]
    forward = torch.eye(4, dtype=torch.float64)
    forward[0, 3] = 0.6
    curr_e2g = prev_e2g @ forward
    l2e = torch.tensor(meta["lidar"]["lidar2ego"], dtype=torch.float64)[None]
    prev_bev = torch.zeros(1, 2, 180, 180)
    prev_bev[0, :, 140, 100] = torch.tensor([1.0, -2.0])
    aligned = align_prev_bev(prev_bev, prev_e2g, curr_e2g, PAPER_RANGE, l2e)
    assert aligned.shape == prev_bev.shape
    torch.testing.assert_close(aligned[0, :, 140, 99], torch.tensor([1.0, -2.0]), atol=0.01, rtol=0)
    assert aligned[0, 0].sum().item() == pytest.approx(1.0, abs=1e-3)
    unmoved = align_prev_bev(prev_bev, prev_e2g, prev_e2g, PAPER_RANGE, l2e)
    torch.testing.assert_close(unmoved, prev_bev, atol=1e-5, rtol=0)


def test_ego_rotation_rotates_the_previous_bev():
    """Turning left by 90 degrees: a static point at (30.3, 9.9) of the previous frame is at (9.9, -30.3) now."""
    prev_e2g = torch.eye(4, dtype=torch.float64)[None]
    curr_e2g = torch.tensor(rot_z(math.pi / 2))[None]
    prev_bev = torch.zeros(1, 1, 180, 180)
    prev_bev[0, 0, 140, 106] = 1.0
    aligned = align_prev_bev(prev_bev, prev_e2g, curr_e2g, PAPER_RANGE)
    assert (int((9.9 + 54) / 0.6), int((-30.3 + 54) / 0.6)) == (106, 39)
    assert aligned[0, 0, 106, 39].item() == pytest.approx(1.0, abs=1e-4)
    assert aligned.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_alignment_undoes_each_frames_bev_augmentation():
    """No motion; the previous BEV was computed with x flipped, the current one with a +90 degree turn: current cell
    (x, y) is augmented-LiDAR point (x, y) = LiDAR (y, -x), i.e. previous augmented point (-y, -x)."""
    prev_bev = torch.zeros(1, 1, 180, 180)
    prev_bev[0, 0, 60, 30] = 1.0                     # previous augmented cell of (-17.7, -35.7)
    eye = torch.eye(4, dtype=torch.float64)[None]
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))[None]
    turn = torch.tensor(rot_z(math.pi / 2))[None]
    aligned = align_prev_bev(prev_bev, eye, eye, PAPER_RANGE, prev_lidar_aug=flip, curr_lidar_aug=turn)
    # (-y, -x) = (-17.7, -35.7) -> (x, y) = (35.7, 17.7): cells ((35.7 + 54) / 0.6, (17.7 + 54) / 0.6)
    assert aligned[0, 0, 149, 119].item() == pytest.approx(1.0, abs=1e-4)
    assert aligned.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_prev_valid_switches_the_previous_bev_per_sample():
    """A sample marked without a previous frame gives what it gives with prev_bev=None; the other one is unchanged."""
    enc = randomize(tiny_encoder(), seed=4).eval()
    l2i, aug = rig_tensors((32, 88), 2)
    feats, bev_aug = tiny_features(2), torch.eye(4)[None].repeat(2, 1, 1)
    prev = torch.randn(2, 8, 4, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        with_prev, _ = enc(feats, l2i, aug, bev_aug, prev)
        without, _ = enc(feats, l2i, aug, bev_aug)
        mixed, _ = enc(feats, l2i, aug, bev_aug, prev, prev_valid=torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], with_prev[0])
    torch.testing.assert_close(mixed[1], without[1])
    assert not torch.allclose(with_prev[1], without[1])
    with pytest.raises(ValueError, match="prev_valid must be a \\[2\\] bool tensor"):
        enc(feats, l2i, aug, bev_aug, prev, prev_valid=torch.ones(2))


# ------------------------------------------------------------------------------------------------ encoder
def test_two_samples_in_one_batch_equal_two_batches_of_one():
    enc = randomize(tiny_encoder(), seed=4).eval()
    l2i, aug = rig_tensors((32, 88), 2)
    bev_aug = torch.tensor(lidar_augs()[:2], dtype=torch.float32)
    feats = tiny_features(2, seed=5)
    prev = torch.randn(2, 8, 4, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, embed = enc(feats, l2i, aug, bev_aug, prev)
        for s in range(2):
            one, one_embed = enc([f[s:s + 1] for f in feats], l2i[s:s + 1], aug[s:s + 1], bev_aug[s:s + 1],
                                 prev[s:s + 1])
            torch.testing.assert_close(out[s:s + 1], one, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(embed[s:s + 1], one_embed, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_gradients_reach_queries_embeddings_and_image_features():
    enc = randomize(tiny_encoder(dropout=0.1), seed=8, std=0.1).train()  # at init, pos only feeds zero weights
    l2i, aug = rig_tensors((32, 88), 2)
    feats = [f.requires_grad_() for f in tiny_features(2, seed=7)]
    prev = torch.randn(2, 8, 4, 3, requires_grad=True)
    out, embed = enc(feats, l2i, aug, torch.eye(4)[None].repeat(2, 1, 1), prev)
    ((out * torch.randn_like(out)).sum() + embed.square().sum()).backward()
    pos = enc.positional_encoding
    grads = {"feature level 0": feats[0].grad, "feature level 1": feats[1].grad, "prev_bev": prev.grad,
             "bev queries": enc.bev_embedding.weight.grad, "row embedding": pos.row_embed.weight.grad,
             "column embedding": pos.col_embed.weight.grad, "camera embeddings": enc.cams_embeds.grad,
             "level embeddings": enc.level_embeds.grad,
             "SCA offsets": enc.layers[0].attentions[1].deformable_attention.sampling_offsets.weight.grad,
             "TSA offsets": enc.layers[0].attentions[0].sampling_offsets.weight.grad}
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert (feats[0].grad.abs().sum((0, 2, 3, 4)) > 0).all()  # every camera sees part of the grid


def test_bfloat16_autocast_stays_close_to_float32():
    """Anchors behind cameras must not overflow the low-precision sampling grids."""
    enc = randomize(tiny_encoder(), seed=9, std=0.1).eval()
    l2i, aug = rig_tensors((32, 88), 2)
    args = (tiny_features(2, seed=10), l2i, aug, torch.eye(4)[None].repeat(2, 1, 1))
    with torch.no_grad():
        ref, _ = enc(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = enc(*args)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_bad_inputs_raise_clear_errors():
    enc = tiny_encoder()
    l2i, aug = rig_tensors((32, 88), 1)
    feats, bev_aug = tiny_features(1), torch.eye(4)[None]
    with pytest.raises(ValueError, match="2 feature levels"):
        enc(feats[:1], l2i, aug, bev_aug)
    with pytest.raises(ValueError, match=r"mlvl_feats\[1\]"):
        enc([feats[0], feats[1][:, :, :4]], l2i, aug, bev_aug)
    with pytest.raises(ValueError, match="lidar2image is missing"):
        enc(feats, None, aug, bev_aug)
    with pytest.raises(ValueError, match="lidar_aug_matrix must be"):
        enc(feats, l2i, aug, bev_aug[0])
    with pytest.raises(ValueError, match="prev_bev must be"):
        enc(feats, l2i, aug, bev_aug, torch.zeros(1, 8, 3, 4))
    with pytest.raises(ValueError, match="sca_points"):
        tiny_encoder(sca_points=3)
    with pytest.raises(ValueError, match="curr_ego2global is missing"):
        align_prev_bev(torch.zeros(1, 2, 4, 4), torch.eye(4)[None], None, PAPER_RANGE)


def test_paper_size_modules_and_checkpoint_key_shapes():
    """Sizes of VARIANTS.md B.3/B.4: 823,488 parameters per layer, released key names under our prefixes."""
    enc = MODELS.build(dict(type="BEVFormerEncoder"))
    state = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert len(enc.layers) == 6
    assert sum(p.numel() for p in enc.layers[0].parameters()) == 823_488
    expected = {"bev_embedding.weight": (180 * 180, 256), "positional_encoding.row_embed.weight": (180, 128),
                "positional_encoding.col_embed.weight": (180, 128), "level_embeds": (4, 256),
                "cams_embeds": (6, 256), "layers.5.attentions.0.sampling_offsets.weight": (128, 512),
                "layers.5.attentions.0.attention_weights.weight": (64, 512),
                "layers.0.attentions.1.deformable_attention.sampling_offsets.weight": (512, 256),
                "layers.0.attentions.1.deformable_attention.attention_weights.weight": (256, 256),
                "layers.0.attentions.1.output_proj.weight": (256, 256),
                "layers.0.ffns.0.layers.0.0.weight": (512, 256), "layers.0.ffns.0.layers.1.weight": (256, 512),
                "layers.0.norms.2.weight": (256,), "bev_proj.0.weight": (80, 256, 1, 1)}
    for key, shape in expected.items():
        assert state[key] == shape, key


@pytest.mark.slow  # ~15 s and 4.5 GB on CPU per layer; the layer count does not change any shape
def test_paper_size_forward_shape():
    enc = BEVFormerEncoder(num_layers=1, dropout=0.0).eval()
    l2i, aug = rig_tensors((256, 704), 1)
    feats = [torch.randn(1, 6, 256, h, w) for h, w in ((32, 88), (16, 44), (8, 22), (4, 11))]
    with torch.no_grad():
        out, embed = enc(feats, l2i, aug, torch.eye(4)[None], prev_bev=torch.randn(1, 256, 180, 180))
    assert out.shape == (1, 80, 180, 180) and embed.shape == (1, 256, 180, 180)
    assert torch.isfinite(out).all()
