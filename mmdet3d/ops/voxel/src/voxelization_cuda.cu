// Hard voxelization on the GPU, deterministic: a stable sort of the points' voxel keys groups each voxel's points in
// input order; voxels are numbered by their first point, capped, and filled by one scatter kernel.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../../common/src/cuda_utils.cuh"
#include "../../common/src/ops.h"

namespace {

// Correctly rounded division (the extension is built with --use_fast_math), so that points on a voxel boundary
// fall in the same voxel as in the PyTorch path.
__device__ __forceinline__ float exact_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double exact_div(double a, double b) { return __ddiv_rn(a, b); }

template <typename scalar_t>
__global__ void voxel_keys_kernel(const scalar_t* __restrict__ points, int64_t num_points, int64_t num_features,
                                  scalar_t vx, scalar_t vy, scalar_t vz, scalar_t x0, scalar_t y0, scalar_t z0,
                                  int64_t gx, int64_t gy, int64_t gz, int64_t* __restrict__ keys) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < num_points;
       i += (int64_t)gridDim.x * blockDim.x) {
    const scalar_t* p = points + i * num_features;
    const int64_t cx = static_cast<int64_t>(floor(exact_div(p[0] - x0, vx)));
    const int64_t cy = static_cast<int64_t>(floor(exact_div(p[1] - y0, vy)));
    const int64_t cz = static_cast<int64_t>(floor(exact_div(p[2] - z0, vz)));
    const bool inside = cx >= 0 && cx < gx && cy >= 0 && cy < gy && cz >= 0 && cz < gz;
    keys[i] = inside ? (cx * gy + cy) * gz + cz : -1;
  }
}

// One thread per (sorted point, feature): copies kept points into their voxel slot.
template <typename scalar_t>
__global__ void scatter_points_kernel(const scalar_t* __restrict__ points, const int64_t* __restrict__ point_of_sorted,
                                      const int64_t* __restrict__ segment_of_sorted,
                                      const int64_t* __restrict__ segment_start,
                                      const int64_t* __restrict__ voxel_of_segment, int64_t num_sorted,
                                      int64_t num_features, int64_t max_points, int64_t num_voxels,
                                      scalar_t* __restrict__ voxels) {
  const int64_t total = num_sorted * num_features;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = idx / num_features;
    const int64_t f = idx % num_features;
    const int64_t segment = segment_of_sorted[i];
    const int64_t voxel = voxel_of_segment[segment];
    const int64_t slot = i - segment_start[segment];
    if (voxel < num_voxels && slot < max_points) {
      voxels[(voxel * max_points + slot) * num_features + f] = points[point_of_sorted[i] * num_features + f];
    }
  }
}

}  // namespace

std::vector<at::Tensor> hard_voxelize_cuda(const at::Tensor& points, const std::vector<double>& voxel_size,
                                           const std::vector<double>& range_min,
                                           const std::vector<int64_t>& grid_size, int64_t max_points,
                                           int64_t max_voxels) {
  MMDET3D_CHECK_INPUT(points);
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3, "points must be [P, C>=3]");
  TORCH_CHECK(voxel_size.size() == 3 && range_min.size() == 3 && grid_size.size() == 3,
              "voxel_size, range_min and grid_size need 3 values each");
  TORCH_CHECK(max_points > 0 && max_voxels > 0, "max_points and max_voxels must be positive");
  const c10::cuda::CUDAGuard guard(points.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t num_points = points.size(0);
  const int64_t num_features = points.size(1);
  const auto long_opts = points.options().dtype(at::kLong);

  auto keys = at::empty({num_points}, long_opts);
  if (num_points > 0) {
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "voxel_keys", [&] {
      voxel_keys_kernel<scalar_t><<<mmdet3d::num_blocks(num_points), mmdet3d::kThreads, 0, stream>>>(
          points.data_ptr<scalar_t>(), num_points, num_features, static_cast<scalar_t>(voxel_size[0]),
          static_cast<scalar_t>(voxel_size[1]), static_cast<scalar_t>(voxel_size[2]),
          static_cast<scalar_t>(range_min[0]), static_cast<scalar_t>(range_min[1]),
          static_cast<scalar_t>(range_min[2]), grid_size[0], grid_size[1], grid_size[2], keys.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  const auto point_idx = at::nonzero(keys >= 0).squeeze(1);  // valid points, input order
  const int64_t num_valid = point_idx.numel();
  if (num_valid == 0) {
    return {at::zeros({0, max_points, num_features}, points.options()),
            at::zeros({0, 3}, points.options().dtype(at::kInt)), at::zeros({0}, points.options().dtype(at::kInt))};
  }
  // Stable: inside a voxel the points stay in input order, so a segment's first element is its first-seen point.
  const auto sorted = at::sort(keys.index_select(0, point_idx), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const auto& sorted_keys = std::get<0>(sorted);
  const auto point_of_sorted = point_idx.index_select(0, std::get<1>(sorted));

  auto is_start = at::ones({num_valid}, long_opts.dtype(at::kBool));
  if (num_valid > 1) {
    is_start.slice(0, 1).copy_(sorted_keys.slice(0, 1).ne(sorted_keys.slice(0, 0, num_valid - 1)));
  }
  const auto segment_start = at::nonzero(is_start).squeeze(1);
  const auto segment_of_sorted = at::cumsum(is_start, 0, at::kLong) - 1;
  const int64_t num_segments = segment_start.numel();

  // Voxels are numbered by their first point's input position.
  const auto segment_of_voxel = std::get<1>(at::sort(point_of_sorted.index_select(0, segment_start)));
  const auto voxel_of_segment =
      at::empty_like(segment_of_voxel).scatter_(0, segment_of_voxel, at::arange(num_segments, long_opts));
  const int64_t num_voxels = std::min(num_segments, max_voxels);

  auto voxels = at::zeros({num_voxels, max_points, num_features}, points.options());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "scatter_points", [&] {
    scatter_points_kernel<scalar_t><<<mmdet3d::num_blocks(num_valid * num_features), mmdet3d::kThreads, 0, stream>>>(
        points.data_ptr<scalar_t>(), point_of_sorted.data_ptr<int64_t>(), segment_of_sorted.data_ptr<int64_t>(),
        segment_start.data_ptr<int64_t>(), voxel_of_segment.data_ptr<int64_t>(), num_valid, num_features,
        max_points, num_voxels, voxels.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  const auto kept_segments = segment_of_voxel.slice(0, 0, num_voxels);
  const auto segment_end = at::cat({segment_start.slice(0, 1), at::full({1}, num_valid, long_opts)});
  const auto num_in_voxel = (segment_end - segment_start).index_select(0, kept_segments).clamp_max(max_points);
  const auto voxel_keys = sorted_keys.index_select(0, segment_start.index_select(0, kept_segments));
  const int64_t gy = grid_size[1], gz = grid_size[2];
  const auto coords = at::stack({voxel_keys.div(gy * gz, "floor"), voxel_keys.div(gz, "floor").remainder(gy),
                                 voxel_keys.remainder(gz)},
                                1);
  return {voxels, coords.to(at::kInt), num_in_voxel.to(at::kInt)};
}
