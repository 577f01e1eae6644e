// BEV pooling kernels (BEVPoolv2-style): the frustum entries are sorted by BEV cell once (a CSR structure built in
// Python with torch.sort); every output value is then one thread's sum over its cell's entries, so the forward needs
// no atomics and is deterministic. Features are channel-last ([pixels, C], [cells, C]) so that the threads of one
// cell read and write contiguous rows.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../../common/src/cuda_utils.cuh"
#include "../../common/src/ops.h"

namespace {

// out[r, c] = sum over j in [crow[r], crow[r+1]) of weight[j] * src[col[j], c]; weight == nullptr means 1.
template <typename scalar_t>
__global__ void csr_weighted_sum_kernel(const int* __restrict__ crow, const int* __restrict__ col,
                                        const scalar_t* __restrict__ weight, const scalar_t* __restrict__ src,
                                        int64_t rows, int64_t channels, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = rows * channels;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = idx / channels;
    const int64_t c = idx % channels;
    acc_t acc = 0;
    const int end = crow[r + 1];
    // Unrolled so that several rows' loads are in flight: the busiest cells hold ~1000 entries.
#pragma unroll 4
    for (int j = crow[r]; j < end; ++j) {
      const acc_t w = weight == nullptr ? acc_t(1) : static_cast<acc_t>(weight[j]);
      acc += w * static_cast<acc_t>(src[static_cast<int64_t>(col[j]) * channels + c]);
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

// Cell ((b * nz + z) * nx + x) * ny + y of every (camera, depth, pixel) entry, or -1 outside the grid.
template <typename index_t>
__global__ void bev_depth_cells_kernel(const index_t* __restrict__ coords, int64_t entries, int64_t per_camera,
                                       int64_t cams_per_sample, int64_t nx, int64_t ny, int64_t nz,
                                       int* __restrict__ cells) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < entries;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t x = coords[3 * e], y = coords[3 * e + 1], z = coords[3 * e + 2];
    const int64_t b = e / per_camera / cams_per_sample;
    const bool inside = x >= 0 && x < nx && y >= 0 && y < ny && z >= 0 && z < nz;
    cells[e] = inside ? static_cast<int>(((b * nz + z) * nx + x) * ny + y) : -1;
  }
}

// grad_feats[p, c] = sum over depth bins d of depth[e] * grad[cell(e), c], e = entry (camera, d, pixel) of p.
template <typename scalar_t>
__global__ void bev_depth_grad_feats_kernel(const int* __restrict__ cells, const scalar_t* __restrict__ depth,
                                            const scalar_t* __restrict__ grad, int64_t pixels, int64_t depth_bins,
                                            int64_t pixels_per_cam, int64_t channels,
                                            scalar_t* __restrict__ grad_feats) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = pixels * channels;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = idx / channels;
    const int64_t c = idx % channels;
    const int64_t first = (p / pixels_per_cam) * depth_bins * pixels_per_cam + p % pixels_per_cam;
    acc_t acc = 0;
#pragma unroll 4
    for (int64_t d = 0; d < depth_bins; ++d) {
      const int64_t e = first + d * pixels_per_cam;
      const int cell = cells[e];
      if (cell >= 0) {
        acc += static_cast<acc_t>(depth[e]) * static_cast<acc_t>(grad[static_cast<int64_t>(cell) * channels + c]);
      }
    }
    grad_feats[idx] = static_cast<scalar_t>(acc);
  }
}

// grad_depth[e] = <grad[cell(e)], feats[pixel(e)]>: one warp per entry, lanes split the channels.
template <typename scalar_t>
__global__ void bev_depth_grad_depth_kernel(const int* __restrict__ cells, const scalar_t* __restrict__ feats,
                                            const scalar_t* __restrict__ grad, int64_t entries, int64_t depth_bins,
                                            int64_t pixels_per_cam, int64_t channels,
                                            scalar_t* __restrict__ grad_depth) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const int64_t num_warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t e = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; e < entries; e += num_warps) {
    const int cell = cells[e];  // the same for the whole warp: the branch below does not diverge
    acc_t acc = 0;
    if (cell >= 0) {
      const int64_t pixel = e / (depth_bins * pixels_per_cam) * pixels_per_cam + e % pixels_per_cam;
      const scalar_t* g = grad + static_cast<int64_t>(cell) * channels;
      const scalar_t* f = feats + pixel * channels;
      for (int64_t c = lane; c < channels; c += 32) {
        acc += static_cast<acc_t>(g[c]) * static_cast<acc_t>(f[c]);
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      acc += __shfl_down_sync(0xffffffffu, acc, offset);
    }
    if (lane == 0) {
      grad_depth[e] = static_cast<scalar_t>(acc);
    }
  }
}

void check_cells(const at::Tensor& cell_of_entry, int64_t depth_bins, int64_t pixels_per_cam) {
  MMDET3D_CHECK_INPUT(cell_of_entry);
  TORCH_CHECK(cell_of_entry.scalar_type() == at::kInt && cell_of_entry.dim() == 1, "cell_of_entry must be int32 [E]");
  TORCH_CHECK(depth_bins > 0 && pixels_per_cam > 0 && cell_of_entry.numel() % (depth_bins * pixels_per_cam) == 0,
              "cell_of_entry does not split into cameras of depth_bins x pixels_per_cam entries");
}

}  // namespace

at::Tensor csr_weighted_sum_cuda(const at::Tensor& crow, const at::Tensor& col,
                                 const std::optional<at::Tensor>& weight, const at::Tensor& src) {
  MMDET3D_CHECK_INPUT(crow);
  MMDET3D_CHECK_INPUT(col);
  MMDET3D_CHECK_INPUT(src);
  TORCH_CHECK(crow.scalar_type() == at::kInt && col.scalar_type() == at::kInt, "crow and col must be int32");
  TORCH_CHECK(crow.dim() == 1 && crow.numel() >= 1 && col.dim() == 1 && src.dim() == 2,
              "crow [R+1], col [nnz] and src [S, C] expected");
  if (weight.has_value()) {
    MMDET3D_CHECK_INPUT(*weight);
    TORCH_CHECK(weight->scalar_type() == src.scalar_type() && weight->numel() == col.numel(),
                "weight must match col in length and src in dtype");
  }
  const c10::cuda::CUDAGuard guard(src.device());
  const int64_t rows = crow.numel() - 1;
  const int64_t channels = src.size(1);
  auto out = at::empty({rows, channels}, src.options());
  if (rows == 0 || channels == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "csr_weighted_sum", [&] {
    csr_weighted_sum_kernel<scalar_t>
        <<<mmdet3d::num_blocks(rows * channels), mmdet3d::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            crow.data_ptr<int>(), col.data_ptr<int>(), weight.has_value() ? weight->data_ptr<scalar_t>() : nullptr,
            src.data_ptr<scalar_t>(), rows, channels, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor bev_depth_cells_cuda(const at::Tensor& coords, int64_t batch_size, int64_t nx, int64_t ny, int64_t nz) {
  MMDET3D_CHECK_INPUT(coords);
  TORCH_CHECK(coords.dim() == 5 && coords.size(4) == 3, "coords must be [BN, D, fH, fW, 3]");
  TORCH_CHECK(batch_size > 0 && coords.size(0) % batch_size == 0, "cameras do not split into batch_size samples");
  const c10::cuda::CUDAGuard guard(coords.device());
  const int64_t entries = coords.numel() / 3;
  auto cells = at::empty({entries}, coords.options().dtype(at::kInt));
  if (entries == 0) {
    return cells;
  }
  const int64_t per_camera = entries / coords.size(0);
  const int64_t cams_per_sample = coords.size(0) / batch_size;
  AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_depth_cells", [&] {
    bev_depth_cells_kernel<index_t>
        <<<mmdet3d::num_blocks(entries), mmdet3d::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            coords.data_ptr<index_t>(), entries, per_camera, cams_per_sample, nx, ny, nz, cells.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return cells;
}

at::Tensor bev_depth_backward_depth_cuda(const at::Tensor& cell_of_entry, const at::Tensor& feats,
                                         const at::Tensor& grad_cells, int64_t depth_bins, int64_t pixels_per_cam) {
  check_cells(cell_of_entry, depth_bins, pixels_per_cam);
  MMDET3D_CHECK_INPUT(feats);
  MMDET3D_CHECK_INPUT(grad_cells);
  TORCH_CHECK(feats.dim() == 2 && grad_cells.dim() == 2 && feats.size(1) == grad_cells.size(1) &&
                  feats.scalar_type() == grad_cells.scalar_type(),
              "feats [pixels, C] and grad_cells [cells, C] of one dtype expected");
  const c10::cuda::CUDAGuard guard(feats.device());
  const int64_t entries = cell_of_entry.numel();
  auto grad_depth = at::empty({entries}, feats.options());
  if (entries == 0) {
    return grad_depth;
  }
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "bev_depth_backward_depth", [&] {
    bev_depth_grad_depth_kernel<scalar_t>
        <<<mmdet3d::num_blocks(entries * 32), mmdet3d::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            cell_of_entry.data_ptr<int>(), feats.data_ptr<scalar_t>(), grad_cells.data_ptr<scalar_t>(), entries,
            depth_bins, pixels_per_cam, feats.size(1), grad_depth.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_depth;
}

at::Tensor bev_depth_backward_feats_cuda(const at::Tensor& cell_of_entry, const at::Tensor& depth,
                                         const at::Tensor& grad_cells, int64_t depth_bins, int64_t pixels_per_cam) {
  check_cells(cell_of_entry, depth_bins, pixels_per_cam);
  MMDET3D_CHECK_INPUT(depth);
  MMDET3D_CHECK_INPUT(grad_cells);
  TORCH_CHECK(depth.numel() == cell_of_entry.numel() && depth.scalar_type() == grad_cells.scalar_type() &&
                  grad_cells.dim() == 2,
              "depth [E] and grad_cells [cells, C] of one dtype expected");
  const c10::cuda::CUDAGuard guard(depth.device());
  const int64_t channels = grad_cells.size(1);
  const int64_t pixels = cell_of_entry.numel() / depth_bins;
  auto grad_feats = at::empty({pixels, channels}, grad_cells.options());
  if (pixels == 0 || channels == 0) {
    return grad_feats;
  }
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "bev_depth_backward_feats", [&] {
    bev_depth_grad_feats_kernel<scalar_t>
        <<<mmdet3d::num_blocks(pixels * channels), mmdet3d::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            cell_of_entry.data_ptr<int>(), depth.data_ptr<scalar_t>(), grad_cells.data_ptr<scalar_t>(), pixels,
            depth_bins, pixels_per_cam, channels, grad_feats.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_feats;
}
