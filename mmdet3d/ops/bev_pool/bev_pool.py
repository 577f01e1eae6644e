"""BEV pooling ("splat" of lift-splat): sum frustum features into BEV cells.

``bev_pool`` sums given point features per cell (BEVFusion's op). ``bev_pool_depth`` computes the same result for the
depth x feature outer product of LSS without building it: a ``BEVPoolPlan`` sorts the valid (camera, depth, pixel)
entries by output cell once, which is a sparse matrix ``A[cell, pixel]`` whose non-zeros take the depth
probabilities; pooling is then ``A @ feats`` (CSR row sums, BEVPoolv2-style on CUDA). The plan depends only on the
frustum geometry, so with fixed calibration it can be built once and reused. ``bev_cells`` turns metric points into
the integer cells both take.
"""
import warnings

import torch

from ..common import cuda_kernels

__all__ = ["bev_pool", "bev_pool_depth", "bev_pool_outer_product", "bev_cells", "BEVPoolPlan", "CELL_RULES"]

CELL_RULES = ("trunc", "floor")


def _compute_dtype(*tensors):
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"bev_pool: features must be floating point, got {dtype}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_int(name, tensor):
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"bev_pool: {name} must be an integer tensor, got {tensor.dtype}")


def bev_cells(points, lower, step, rule="trunc"):
    """Integer BEV cell ``[..., 3]`` (int64) of metric points ``[..., 3]`` on a grid starting at ``lower`` with cell
    size ``step``; cells outside the grid are returned as they are (the pooling drops them).

    ``rule="trunc"`` is BEVFusion's ``((p - lo) / step).long()``: truncation toward zero, so a point whose cell
    coordinate lies in (-1, 0) lands in cell 0 — every released BEVFusion/SimDistill checkpoint was trained with it.
    ``rule="floor"`` assigns each point to the cell that contains it.
    """
    if rule not in CELL_RULES:
        raise ValueError(f"bev_cells: rule must be one of {CELL_RULES}, got {rule!r}")
    lower = torch.as_tensor(lower, dtype=points.dtype, device=points.device)
    step = torch.as_tensor(step, dtype=points.dtype, device=points.device)
    scaled = (points - lower) / step
    return (scaled.trunc() if rule == "trunc" else scaled.floor()).long()


def _sorted_csr(rows, num_rows, payload):
    """Sorts ``payload`` by ``rows`` (stable) and returns ``(crow[num_rows + 1], payload_sorted)`` as int32."""
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=num_rows), 0, out=crow[1:])
    return crow.int(), payload[order].int()


def _csr_matrix(crow, col, values, num_cols):
    with warnings.catch_warnings():  # "sparse CSR support is in beta" is noise for this fixed, tested use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, num_cols), check_invariants=False)


def _csr_row_sums(ext, crow, col, weight, src):
    """``out[r] = sum_j weight[j] * src[col[j]]`` over ``j`` in row ``r`` of a CSR structure (weight None = 1)."""
    if ext is not None:
        return ext.csr_weighted_sum(crow, col, weight, src)
    if weight is None:
        weight = src.new_ones(col.numel())
    return _csr_matrix(crow, col, weight, src.shape[0]) @ src


class _BEVPoolFunction(torch.autograd.Function):
    """Per-cell sums over the points sorted by cell (deterministic); the backward is a gather."""

    @staticmethod
    def forward(ctx, feats, cells, crow, point_of_sorted, ext):
        ctx.save_for_backward(cells)
        return _csr_row_sums(ext, crow, point_of_sorted, None, feats)

    @staticmethod
    def backward(ctx, grad_cells):
        (cells,) = ctx.saved_tensors
        valid = cells >= 0
        grad = grad_cells.new_zeros(cells.numel(), grad_cells.shape[1])
        grad[valid] = grad_cells[cells[valid]]
        return grad, None, None, None, None


def bev_pool(feats, coords, B, D, H, W):
    """Sums ``feats[N, C]`` into cells ``coords[N, 4]`` = (x, y, z, batch): ``-> [B, C, D, H, W]``.

    ``D`` is the number of z cells, ``H`` of x cells, ``W`` of y cells (BEVFusion's naming); entries outside the
    grid are dropped. Differentiable in ``feats``.
    """
    if feats.dim() != 2 or coords.dim() != 2 or coords.shape != (feats.shape[0], 4):
        raise ValueError(f"bev_pool: feats must be [N, C] and coords [N, 4], got {tuple(feats.shape)} and "
                         f"{tuple(coords.shape)}")
    _check_int("coords", coords)
    B, D, H, W = int(B), int(D), int(H), int(W)
    if min(B, D, H, W) <= 0:
        raise ValueError(f"bev_pool: B, D, H, W must be positive, got {(B, D, H, W)}")
    feats = feats.to(_compute_dtype(feats))
    C = feats.shape[1]
    coords = coords.long()
    x, y, z, b = coords.unbind(1)
    valid = (x >= 0) & (x < H) & (y >= 0) & (y < W) & (z >= 0) & (z < D) & (b >= 0) & (b < B)
    cells = ((b * D + z) * H + x) * W + y
    num_cells = B * D * H * W
    if num_cells >= 2**31 or feats.shape[0] >= 2**31:
        raise ValueError(f"bev_pool: {num_cells} cells or {feats.shape[0]} points exceed int32 indexing")
    cells = torch.where(valid, cells, -1)
    point_idx = valid.nonzero().squeeze(1)
    crow, point_of_sorted = _sorted_csr(cells[point_idx], num_cells, point_idx)
    out = _BEVPoolFunction.apply(feats.contiguous(), cells, crow, point_of_sorted, cuda_kernels(feats, coords))
    return out.view(B, D, H, W, C).permute(0, 4, 1, 2, 3)


def outer_product_rows(depth, feats):
    """``[BN * D * fH * fW, C]`` rows of ``depth[BN, D, fH, fW] x feats[BN, C, fH, fW]``, as LSS builds them."""
    return (depth[:, :, None] * feats[:, None]).permute(0, 1, 3, 4, 2).reshape(-1, feats.shape[1])


def cells_with_batch(coords, B):
    """``coords[BN, D, fH, fW, 3]`` -> ``[BN * D * fH * fW, 4]`` (x, y, z, sample), camera ``bn`` in sample
    ``bn // (BN // B)``."""
    BN = coords.shape[0]
    sample = torch.arange(BN, device=coords.device).div(BN // B, rounding_mode="floor")
    return torch.cat([coords, sample.view(BN, 1, 1, 1, 1).expand(*coords.shape[:4], 1)], -1).reshape(-1, 4)


def bev_pool_outer_product(depth, feats, coords, B, grid):
    """BEVFusion's path to ``bev_pool_depth``'s map: the depth x feature product materialised, then ``bev_pool``.
    Kept to measure what ``bev_pool_depth`` saves; same arguments and result."""
    X, Y, Z = grid
    return torch.cat(bev_pool(outer_product_rows(depth, feats), cells_with_batch(coords, B), B, Z, X, Y).unbind(2), 1)


class BEVPoolPlan:
    """Where every (camera, depth bin, pixel) frustum entry lands in the BEV grid, sorted by cell.

    ``coords[BN, D, fH, fW, 3]`` are integer (x, y, z) cells of a grid ``(X, Y, Z)``; camera ``bn`` belongs to
    sample ``bn // (BN // B)``; entries outside the grid are dropped. ``plan(depth[BN, D, fH, fW],
    feats[BN, C, fH, fW]) -> [B, C*Z, X, Y]`` (Z slices concatenated along channels, channel ``z*C + c``).
    """

    def __init__(self, coords, B, grid):
        if coords.dim() != 5 or coords.shape[-1] != 3:
            raise ValueError(f"BEVPoolPlan: coords must be [BN, D, fH, fW, 3], got {tuple(coords.shape)}")
        _check_int("coords", coords)
        self.B = int(B)
        self.grid = tuple(int(g) for g in grid)
        if len(self.grid) != 3 or min(self.grid) <= 0 or self.B <= 0:
            raise ValueError(f"BEVPoolPlan: grid must be 3 positive ints (X, Y, Z) and B positive, got {grid}, {B}")
        BN, D, fH, fW, _ = coords.shape
        if BN % self.B != 0:
            raise ValueError(f"BEVPoolPlan: {BN} cameras (coords dim 0) do not split into B={self.B} samples")
        X, Y, Z = self.grid
        self.shape = (BN, D, fH, fW)
        self.num_cells = self.B * Z * X * Y
        num_entries = BN * D * fH * fW
        if self.num_cells >= 2**31 or num_entries >= 2**31:
            raise ValueError(f"BEVPoolPlan: {self.num_cells} cells or {num_entries} entries exceed int32 indexing")
        self.device = coords.device

        ext = cuda_kernels(coords)
        if ext is not None:
            coords = coords if coords.dtype in (torch.int32, torch.int64) else coords.long()
            self.cell_of_entry = ext.bev_depth_cells(coords.contiguous(), self.B, X, Y, Z)
        else:
            self.cell_of_entry = self._cells(coords)
        # Cell-major CSR: rows = BEV cells, columns = pixels (bn, h, w); non-zero j holds depth entry
        # entry_sorted[j]. Sorting is stable, so the summation order (and the result) is deterministic.
        entries = (self.cell_of_entry >= 0).nonzero().squeeze(1)
        self.crow, self.entry_sorted = _sorted_csr(self.cell_of_entry[entries], self.num_cells, entries)
        hw = fH * fW
        self.col = self.entry_sorted // (D * hw) * hw + self.entry_sorted % hw
        self._pixel_major = None

    def _cells(self, coords):
        BN = self.shape[0]
        X, Y, Z = self.grid
        # int32 arithmetic: the cell count was checked to fit, and it halves the memory traffic.
        x, y, z = coords.reshape(BN, -1, 3).int().unbind(-1)
        batch = torch.arange(BN, device=coords.device, dtype=torch.int32).div(BN // self.B, rounding_mode="floor")
        valid = (x >= 0) & (x < X) & (y >= 0) & (y < Y) & (z >= 0) & (z < Z)
        cells = ((batch[:, None] * Z + z) * X + x) * Y + y
        return torch.where(valid, cells, -1).reshape(-1)

    def _pixel_major_csr(self):
        """The transposed structure (rows = pixels, columns = cells) used by the CPU backward; built once."""
        if self._pixel_major is None:
            BN, D, fH, fW = self.shape
            hw = fH * fW
            cells_t = self.cell_of_entry.view(BN, D, hw).transpose(1, 2).reshape(-1)
            entry_t = torch.arange(BN * D * hw, device=self.device, dtype=torch.int32)
            entry_t = entry_t.view(BN, D, hw).transpose(1, 2).reshape(-1)
            valid = cells_t >= 0
            counts = valid.view(BN * hw, D).sum(1)
            crow = torch.zeros(BN * hw + 1, dtype=torch.int64, device=self.device)
            torch.cumsum(counts, 0, out=crow[1:])
            self._pixel_major = (crow.int(), cells_t[valid], entry_t[valid])
        return self._pixel_major

    def _check_inputs(self, depth, feats):
        BN, D, fH, fW = self.shape
        if tuple(depth.shape) != self.shape:
            raise ValueError(f"bev_pool_depth: depth must be {list(self.shape)} like coords, got {list(depth.shape)}")
        if feats.dim() != 4 or feats.shape[0] != BN or tuple(feats.shape[2:]) != (fH, fW):
            raise ValueError(f"bev_pool_depth: feats must be [{BN}, C, {fH}, {fW}], got {list(feats.shape)}")
        if depth.device != self.device or feats.device != self.device:
            raise ValueError(f"bev_pool_depth: depth ({depth.device}) and feats ({feats.device}) must be on the "
                             f"plan's device {self.device}")

    def __call__(self, depth, feats):
        self._check_inputs(depth, feats)
        dtype = _compute_dtype(depth, feats)
        BN, D, fH, fW = self.shape
        X, Y, Z = self.grid
        C = feats.shape[1]
        feats_cl = feats.to(dtype).permute(0, 2, 3, 1).reshape(BN * fH * fW, C)
        cells = _BEVPoolDepthFunction.apply(depth.to(dtype), feats_cl, self)
        return cells.view(self.B, Z, X, Y, C).permute(0, 1, 4, 2, 3).reshape(self.B, Z * C, X, Y).contiguous()


class _BEVPoolDepthFunction(torch.autograd.Function):
    """``out[cell] = sum over entries k in cell of depth[k] * feats[pixel(k)]`` and its two gradients."""

    @staticmethod
    def forward(ctx, depth, feats_cl, plan):
        depth_flat = depth.reshape(-1)
        feats_cl = feats_cl.contiguous()
        ext = cuda_kernels(depth_flat, feats_cl)
        weight = depth_flat[plan.entry_sorted]
        out = _csr_row_sums(ext, plan.crow, plan.col, weight, feats_cl)
        ctx.save_for_backward(depth_flat, feats_cl)
        ctx.plan = plan
        ctx.depth_shape = depth.shape
        return out

    @staticmethod
    def backward(ctx, grad_cells):
        depth_flat, feats_cl = ctx.saved_tensors
        plan = ctx.plan
        grad_cells = grad_cells.contiguous()
        ext = cuda_kernels(grad_cells, depth_flat)
        BN, D, fH, fW = plan.shape
        grad_depth = grad_feats = None
        if ctx.needs_input_grad[0]:
            if ext is not None:
                grad_depth = ext.bev_depth_backward_depth(plan.cell_of_entry, feats_cl, grad_cells, D, fH * fW)
            else:
                # SDDMM: each non-zero's gradient is <grad_out[cell], feats[pixel]>, evaluated only at the pattern.
                pattern = _csr_matrix(plan.crow, plan.col, grad_cells.new_zeros(plan.col.numel()), feats_cl.shape[0])
                dots = torch.sparse.sampled_addmm(pattern, grad_cells, feats_cl.t(), beta=0.0).values()
                grad_depth = depth_flat.new_zeros(depth_flat.numel())
                grad_depth[plan.entry_sorted] = dots
            grad_depth = grad_depth.view(ctx.depth_shape)
        if ctx.needs_input_grad[1]:
            if ext is not None:
                grad_feats = ext.bev_depth_backward_feats(plan.cell_of_entry, depth_flat, grad_cells, D, fH * fW)
            else:
                crow, cells, entries = plan._pixel_major_csr()
                grad_feats = _csr_row_sums(None, crow, cells, depth_flat[entries], grad_cells)
        return grad_depth, grad_feats, None


def bev_pool_depth(depth, feats, coords, B, grid):
    """LSS pooling of ``depth[BN, D, fH, fW] x feats[BN, C, fH, fW]`` into ``[B, C*Z, X, Y]``.

    Equal to ``bev_pool`` of the outer product at ``coords[BN, D, fH, fW, 3]`` (x, y, z) with camera ``bn`` in
    sample ``bn // (BN // B)`` and the Z slices concatenated along channels, without materialising the product.
    Builds a ``BEVPoolPlan`` each call; keep one for fixed calibration.
    """
    return BEVPoolPlan(coords, B, grid)(depth, feats)
