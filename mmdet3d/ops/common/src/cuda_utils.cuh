// Helpers shared by the .cu files of mmdet3d._ext.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#define MMDET3D_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define MMDET3D_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define MMDET3D_CHECK_INPUT(x) \
  MMDET3D_CHECK_CUDA(x);       \
  MMDET3D_CHECK_CONTIGUOUS(x)

namespace mmdet3d {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `work` items (capped: the loops cover the rest).
inline int num_blocks(int64_t work, int threads = kThreads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535LL * 8)));
}

}  // namespace mmdet3d
