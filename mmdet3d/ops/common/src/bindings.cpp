// Python bindings of the CUDA extension mmdet3d._ext. The Python side (mmdet3d/ops/*/) validates arguments and
// calls these only for CUDA tensors.
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "CUDA kernels of mmdet3d.ops";
  m.def("hard_voxelize", &hard_voxelize_cuda,
        "hard voxelization: (voxels, coords (x, y, z) int32, num_points int32), first-seen voxel order");
  m.def("csr_weighted_sum", &csr_weighted_sum_cuda, "out[r] = sum over CSR row r of weight[j] * src[col[j]]");
  m.def("bev_depth_cells", &bev_depth_cells_cuda, "BEV cell (int32, -1 outside) of every frustum entry");
  m.def("bev_depth_backward_depth", &bev_depth_backward_depth_cuda, "gradient of bev_pool_depth w.r.t. depth");
  m.def("bev_depth_backward_feats", &bev_depth_backward_feats_cuda,
        "gradient of bev_pool_depth w.r.t. channel-last features");
  m.def("box_iou_bev", &box_iou_bev_cuda, "rotated IoU matrix of (x, y, l, w, yaw) boxes");
}
