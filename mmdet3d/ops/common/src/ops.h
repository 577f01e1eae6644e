// Entry points of the CUDA extension mmdet3d._ext (defined in mmdet3d/ops/*/src/*.cu, bound in bindings.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

// voxel/src/voxelization_cuda.cu
std::vector<at::Tensor> hard_voxelize_cuda(const at::Tensor& points, const std::vector<double>& voxel_size,
                                           const std::vector<double>& range_min,
                                           const std::vector<int64_t>& grid_size, int64_t max_points,
                                           int64_t max_voxels);

// bev_pool/src/bev_pool_cuda.cu
at::Tensor csr_weighted_sum_cuda(const at::Tensor& crow, const at::Tensor& col,
                                 const std::optional<at::Tensor>& weight, const at::Tensor& src);
at::Tensor bev_depth_cells_cuda(const at::Tensor& coords, int64_t batch_size, int64_t nx, int64_t ny, int64_t nz);
at::Tensor bev_depth_backward_depth_cuda(const at::Tensor& cell_of_entry, const at::Tensor& feats,
                                         const at::Tensor& grad_cells, int64_t depth_bins, int64_t pixels_per_cam);
at::Tensor bev_depth_backward_feats_cuda(const at::Tensor& cell_of_entry, const at::Tensor& depth,
                                         const at::Tensor& grad_cells, int64_t depth_bins, int64_t pixels_per_cam);

// iou3d/src/iou3d_cuda.cu
at::Tensor box_iou_bev_cuda(const at::Tensor& a, const at::Tensor& b);
