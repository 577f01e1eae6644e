// Rotated BEV IoU matrix of (x, y, l, w, yaw) boxes: one thread per pair clips the first rectangle by the four edges
// of the second (Sutherland-Hodgman) and takes the shoelace area of what remains.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../../common/src/cuda_utils.cuh"
#include "../../common/src/ops.h"

namespace {

// A convex quadrilateral clipped by 4 half-planes has at most 8 vertices; the slack absorbs rounding noise on
// nearly collinear edges.
constexpr int kMaxVertices = 16;

template <typename T>
struct Point {
  T x, y;
};

template <typename T>
__device__ __forceinline__ T cross(Point<T> o, Point<T> a, Point<T> b) {
  return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

// Counter-clockwise corners of a box centred at (cx, cy). The angle is reduced to [-pi, pi] first because
// --use_fast_math turns sin/cos into intrinsics that are accurate only on a small range.
template <typename T>
__device__ void box_corners(T cx, T cy, T l, T w, T yaw, Point<T>* corners) {
  const T two_pi = static_cast<T>(6.283185307179586);
  yaw -= two_pi * rint(yaw / two_pi);
  const T c = cos(yaw), s = sin(yaw);
  const T hl = fabs(l) / 2, hw = fabs(w) / 2;
  const T dx[4] = {hl, -hl, -hl, hl};
  const T dy[4] = {hw, hw, -hw, -hw};
  for (int k = 0; k < 4; ++k) {
    corners[k] = {cx + dx[k] * c - dy[k] * s, cy + dx[k] * s + dy[k] * c};
  }
}

// Keeps the part of polygon `in` (n vertices) left of the directed line e0 -> e1; returns the new vertex count.
template <typename T>
__device__ int clip_half_plane(const Point<T>* in, int n, Point<T> e0, Point<T> e1, Point<T>* out) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const Point<T> cur = in[i], prev = in[(i + n - 1) % n];
    const T fc = cross(e0, e1, cur), fp = cross(e0, e1, prev);
    if ((fc >= 0) != (fp >= 0) && m < kMaxVertices) {
      const T t = fp / (fp - fc);
      out[m++] = {prev.x + t * (cur.x - prev.x), prev.y + t * (cur.y - prev.y)};
    }
    if (fc >= 0 && m < kMaxVertices) {
      out[m++] = cur;
    }
  }
  return m;
}

template <typename T>
__device__ T box_overlap(const T* a, const T* b) {
  // Relative to a's centre, so that the precision depends on the box sizes, not on their distance from the origin.
  Point<T> poly[kMaxVertices], next[kMaxVertices], clip[4];
  box_corners<T>(0, 0, a[2], a[3], a[4], poly);
  box_corners<T>(b[0] - a[0], b[1] - a[1], b[2], b[3], b[4], clip);
  int n = 4;
  for (int k = 0; k < 4 && n > 0; ++k) {
    n = clip_half_plane(poly, n, clip[k], clip[(k + 1) % 4], next);
    for (int i = 0; i < n; ++i) {
      poly[i] = next[i];
    }
  }
  T twice_area = 0;
  for (int i = 0; i < n; ++i) {
    const Point<T> p = poly[i], q = poly[(i + 1) % n];
    twice_area += p.x * q.y - p.y * q.x;
  }
  return n >= 3 ? fabs(twice_area) / 2 : T(0);
}

template <typename T>
__global__ void box_iou_bev_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n, int64_t m,
                                   T* __restrict__ iou) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n * m;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const T* box_a = a + (idx / m) * 5;
    const T* box_b = b + (idx % m) * 5;
    const T dx = box_a[0] - box_b[0], dy = box_a[1] - box_b[1];
    const T reach = (hypot(box_a[2], box_a[3]) + hypot(box_b[2], box_b[3])) / 2;
    T value = 0;
    if (dx * dx + dy * dy <= reach * reach) {  // circumscribed circles meet: the boxes may overlap
      const T overlap = box_overlap(box_a, box_b);
      const T area_a = fabs(box_a[2] * box_a[3]), area_b = fabs(box_b[2] * box_b[3]);
      value = overlap / fmax(area_a + area_b - overlap, static_cast<T>(1e-8));
    }
    iou[idx] = value;
  }
}

}  // namespace

at::Tensor box_iou_bev_cuda(const at::Tensor& a, const at::Tensor& b) {
  MMDET3D_CHECK_INPUT(a);
  MMDET3D_CHECK_INPUT(b);
  TORCH_CHECK(a.dim() == 2 && a.size(1) == 5 && b.dim() == 2 && b.size(1) == 5, "boxes must be [N, 5]");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "both box sets must have one dtype");
  const c10::cuda::CUDAGuard guard(a.device());
  auto iou = at::empty({a.size(0), b.size(0)}, a.options());
  if (iou.numel() == 0) {
    return iou;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "box_iou_bev", [&] {
    box_iou_bev_kernel<scalar_t>
        <<<mmdet3d::num_blocks(iou.numel()), mmdet3d::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), a.size(0), b.size(0), iou.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return iou;
}
