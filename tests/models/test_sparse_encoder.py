import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d.models.backbones import SparseEncoder
from mmdet3d.models.backbones.sparse_encoder import SparseBasicBlock
from mmdet3d.models.lidar_voxelizer import HardVoxelizer
from mmdet3d.ops.spconv import SubMConv3d
from mmdet3d.registry import MODELS

# spconv 2.3.8 itself indexes with a list (a torch deprecation warning that is not ours)
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")

PAPER = dict(type="SparseEncoder", in_channels=5, sparse_shape=[1440, 1440, 41], output_channels=128,
             order=["conv", "norm", "act"], encoder_channels=[[16, 16, 32], [32, 32, 64], [64, 64, 128], [128, 128]],
             encoder_paddings=[[0, 0, 1], [0, 0, 1], [0, 0, [1, 1, 0]], [0, 0]], block_type="basicblock")


def random_voxels(shape, per_sample, batch, seed=0, channels=5):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(batch):
        flat = torch.randperm(shape[0] * shape[1] * shape[2], generator=g)[:per_sample]
        x, rest = flat // (shape[1] * shape[2]), flat % (shape[1] * shape[2])
        coords.append(torch.stack([torch.full_like(x, b), x, rest // shape[2], rest % shape[2]], 1))
    coords = torch.cat(coords).int()
    return torch.randn(len(coords), channels, generator=g), coords


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.2)
            nn.init.normal_(m.running_mean, std=0.2)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    return model.eval()


def _bn(x, bn, mask):
    shape = (1, -1, 1, 1, 1)
    y = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (y * bn.weight.view(shape) + bn.bias.view(shape)) * mask


def _conv(x, mask, conv, subm):
    """Dense emulation: submanifold = same-padded conv kept at active sites; regular = strided conv whose output
    sites are those with any active input in their window."""
    w = conv.weight.permute(0, 4, 1, 2, 3)  # spconv 2.x [Cout, k0, k1, k2, Cin]
    if subm:
        pad = tuple(k // 2 for k in conv.kernel_size)
        return F.conv3d(x, w, padding=pad) * mask, mask
    kw = dict(stride=tuple(conv.stride), padding=tuple(conv.padding))
    out_mask = (F.conv3d(mask, torch.ones(1, 1, *conv.kernel_size), **kw) > 0).float()
    return F.conv3d(x, w, **kw) * out_mask, out_mask


def dense_reference(encoder, feats, coords, batch):
    x = torch.zeros(batch, feats.shape[1], *encoder.sparse_shape)
    mask = torch.zeros(batch, 1, *encoder.sparse_shape)
    b, i, j, k = coords.long().unbind(1)
    x[b, :, i, j, k] = feats
    mask[b, 0, i, j, k] = 1.0

    def conv_module(seq, x, mask, subm):
        x, mask = _conv(x, mask, seq[0], subm)
        return torch.relu(_bn(x, seq[1], mask)), mask

    x, mask = conv_module(encoder.conv_input, x, mask, True)
    for stage in encoder.encoder_layers:
        for block in stage:
            if isinstance(block, SparseBasicBlock):
                out = torch.relu(_bn(_conv(x, mask, block.conv1, True)[0], block.bn1, mask))
                x = torch.relu(_bn(_conv(out, mask, block.conv2, True)[0], block.bn2, mask) + x)
            else:
                x, mask = conv_module(block, x, mask, subm=isinstance(block[0], SubMConv3d))
    x, mask = conv_module(encoder.conv_out, x, mask, False)
    n, c, nx, ny, nz = x.shape
    return x.permute(0, 1, 4, 2, 3).reshape(n, c * nz, nx, ny)


@pytest.mark.parametrize("block_type", ["basicblock", "conv_module"])
def test_sparse_encoder_matches_dense_emulation(block_type):
    torch.manual_seed(0)
    if block_type == "basicblock":
        cfg = {**PAPER, "sparse_shape": [24, 20, 41]}
        shape = (2, 128 * 2, 3, 3)
    else:  # the class defaults (mmdet3d's SECOND-style encoder; x padding 0 in the last stage)
        cfg = dict(type="SparseEncoder", in_channels=5, sparse_shape=[24, 20, 41], output_channels=32)
        shape = (2, 32 * 2, 2, 3)
    encoder = randomise_bn(MODELS.build(cfg))
    feats, coords = random_voxels(cfg["sparse_shape"], 300, batch=2)
    with torch.no_grad():
        out = encoder(feats, coords, 2)
        expected = dense_reference(encoder, feats, coords, 2)
    assert out.shape == expected.shape == shape
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert out.abs().sum() > 0


def test_sparse_encoder_bev_axes():
    """A single voxel at large x (small y) shows up at high row (low column) indices of [B, C, X, Y]."""
    encoder = SparseEncoder(**{k: v for k, v in PAPER.items() if k != "type"} | {"sparse_shape": [64, 64, 41]})
    encoder.eval()
    coords = torch.tensor([[0, 60, 3, 20]], dtype=torch.int32)
    with torch.no_grad():
        out = encoder(torch.ones(1, 5), coords, 1)
    assert out.shape == (1, 256, 8, 8)
    rows, cols = torch.nonzero(out[0].abs().sum(0), as_tuple=True)
    assert len(rows) > 0 and rows.min() >= 6 and cols.max() <= 1


def test_sparse_encoder_key_names_and_norm():
    encoder = MODELS.build(PAPER)
    keys = set(encoder.state_dict())
    for key in ["conv_input.0.weight", "conv_input.1.running_mean", "encoder_layers.encoder_layer1.0.conv1.weight",
                "encoder_layers.encoder_layer1.1.bn2.bias", "encoder_layers.encoder_layer1.2.0.weight",
                "encoder_layers.encoder_layer3.2.1.weight", "encoder_layers.encoder_layer4.1.conv2.weight",
                "conv_out.0.weight", "conv_out.1.running_var"]:
        assert key in keys, key
    assert "encoder_layers.encoder_layer4.2.0.weight" not in keys
    layer3_down = encoder.encoder_layers.encoder_layer3[2][0]
    assert tuple(layer3_down.padding) == (1, 1, 0) and tuple(layer3_down.stride) == (2, 2, 2)
    assert tuple(encoder.conv_out[0].kernel_size) == (1, 1, 3) and tuple(encoder.conv_out[0].stride) == (1, 1, 2)
    assert encoder.conv_input[0].weight.shape == (16, 3, 3, 3, 5)
    bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 1 + 2 * 8 + 3 + 1 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


def test_sparse_encoder_input_checks():
    encoder = SparseEncoder(5, [24, 20, 41])
    with pytest.raises(ValueError, match="voxel_features"):
        encoder(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match="coors"):
        encoder(torch.zeros(3, 5), torch.zeros(3, 3, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match="residual block"):
        SparseEncoder(5, [24, 20, 41], encoder_channels=[[16, 32]], encoder_paddings=[[0, 1]],
                      block_type="basicblock")


def test_sparse_encoder_trains():
    encoder = MODELS.build({**PAPER, "sparse_shape": [24, 20, 41]}).train()
    feats, coords = random_voxels([24, 20, 41], 200, batch=1)
    encoder(feats, coords, 1).sum().backward()
    assert encoder.conv_input[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_sparse_encoder_paper_shape():
    encoder = MODELS.build(PAPER).eval()
    feats, coords = random_voxels([1440, 1440, 40], 4000, batch=1)
    with torch.no_grad():
        out = encoder(feats, coords, 1)
    assert out.shape == (1, 256, 180, 180) and (out >= 0).all()


def brute_force_voxels(points, size, lo, hi, max_points, max_voxels):
    """First-seen voxels (at most ``max_voxels``), each with the mean of its first ``max_points`` points."""
    voxels = {}
    for p in points.tolist():
        if not all(lo[a] <= p[a] < hi[a] for a in range(3)):
            continue
        key = tuple(int((p[a] - lo[a]) // size[a]) for a in range(3))
        if key not in voxels:
            if len(voxels) == max_voxels:
                continue
            voxels[key] = []
        if len(voxels[key]) < max_points:
            voxels[key].append(p)
    return {k: torch.tensor(v).mean(0) for k, v in voxels.items()}


def test_hard_voxelizer_means_and_caps():
    size, lo, hi = [1.0, 1.0, 1.0], [-2.0, -2.0, -1.0], [2.0, 2.0, 1.0]
    vox = MODELS.build(dict(type="HardVoxelizer", voxel_size=size, point_cloud_range=lo + hi, max_num_points=4,
                            max_voxels=(100, 20)))
    g = torch.Generator().manual_seed(0)
    clouds = [torch.rand(n, 5, generator=g) * 5.0 - 2.5 for n in (300, 120)]
    for training, cap in ((True, 100), (False, 20)):
        vox.train(training)
        feats, coords, batch = vox(clouds)
        assert batch == 2 and coords.dtype == torch.int32 and feats.shape == (len(coords), 5)
        for b, cloud in enumerate(clouds):
            expected = brute_force_voxels(cloud, size, lo, hi, 4, cap)
            rows = (coords[:, 0] == b).nonzero()[:, 0]
            got = {tuple(coords[r, 1:].tolist()): feats[r] for r in rows}
            assert got.keys() == expected.keys()
            for key, mean in expected.items():
                torch.testing.assert_close(got[key], mean)
        assert len(coords) == (sum(min(cap, len(brute_force_voxels(c, size, lo, hi, 4, 10**6))) for c in clouds))


def test_voxelizer_and_encoder_put_forward_points_at_high_rows():
    """A point at x = +20 m lands at a row index above the centre, one at y = +20 m at a column above it."""
    vox = HardVoxelizer([0.5, 0.5, 0.2], [-32.0, -32.0, -5.0, 32.0, 32.0, 3.2], 10, 100)
    encoder = SparseEncoder(**{k: v for k, v in PAPER.items() if k != "type"} | {"sparse_shape": [128, 128, 41]})
    encoder.eval()
    for point, axis in (([20.1, 0.1, 0.1, 1.0, 0.0], 0), ([0.1, 20.1, 0.1, 1.0, 0.0], 1)):
        feats, coords, batch = vox([torch.tensor([point])])
        assert coords.tolist() == [[0, int(point[0] // 0.5) + 64, int(point[1] // 0.5) + 64, 25]]
        with torch.no_grad():
            bev = encoder(feats, coords, batch)[0].abs().sum(0)
        assert bev.shape == (16, 16)
        cells = torch.nonzero(bev)
        assert len(cells) > 0
        assert (cells[:, axis] >= 12).all() and (cells[:, 1 - axis] <= 9).all() and (cells[:, 1 - axis] >= 6).all()
