import glob
import os
from types import SimpleNamespace

import torch

import mmdet3d
from mmdet3d.ops import Voxelization, bev_pool_depth
from mmdet3d.ops.common import FORCE_REFERENCE_ENV, cuda_kernels, load_extension

BOUND = ("hard_voxelize", "csr_weighted_sum", "bev_depth_cells", "bev_depth_backward_depth",
         "bev_depth_backward_feats", "box_iou_bev")


def test_built_extension_imports_and_binds_every_kernel():
    built = glob.glob(os.path.join(os.path.dirname(mmdet3d.__file__), "_ext*.so"))
    ext = load_extension()
    if built:
        assert ext is not None, f"{built[0]} exists but does not import"
        assert all(hasattr(ext, name) for name in BOUND)
    else:
        assert ext is None


def test_kernels_only_for_cuda_tensors_unless_forced(monkeypatch):
    on_gpu = SimpleNamespace(is_cuda=True)
    on_cpu = torch.zeros(1)
    monkeypatch.delenv(FORCE_REFERENCE_ENV, raising=False)
    assert cuda_kernels(on_cpu) is None
    assert cuda_kernels(on_gpu, on_cpu) is None
    assert cuda_kernels(on_gpu) is load_extension()
    monkeypatch.setenv(FORCE_REFERENCE_ENV, "1")
    assert cuda_kernels(on_gpu) is None


def test_cpu_ops_run_with_the_extension_loaded():
    load_extension()
    voxels, coords, num = Voxelization([1, 1, 1], [0, 0, 0, 2, 2, 2], 2, 4)(torch.tensor([[0.5, 0.5, 0.5]]))
    assert coords.tolist() == [[0, 0, 0]] and num.tolist() == [1]
    out = bev_pool_depth(torch.ones(1, 1, 1, 1), torch.ones(1, 2, 1, 1), torch.zeros(1, 1, 1, 1, 3, dtype=torch.long),
                         1, (1, 1, 1))
    assert out.tolist() == [[[[1.0]], [[1.0]]]]
