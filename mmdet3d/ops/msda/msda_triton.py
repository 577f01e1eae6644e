"""Triton kernels for multi-scale deformable attention, forward and backward.

One program handles ``BLOCK_Q`` queries of one (batch, head) and keeps their ``Dh``-channel output in registers; each
sampling point reads its four bilinear corners as ``[BLOCK_Q, Dh]`` tiles, so nothing of size Q x heads x L x P x Dh
is ever written to memory (the ``grid_sample`` path materialises exactly that). Backward re-reads the corners, adds
the value gradient with atomics and reduces the location and weight gradients over channels.

Triton compiles these for the GPU; with ``TRITON_INTERPRET=1`` set before this module is imported they run on CPU
tensors, which is how CI checks them against the PyTorch path.
"""
import torch
import triton
import triton.language as tl

BLOCK_Q = 32


@triton.jit
def _program_tile(Q, heads, Dh: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch and head, its query indices and channel indices, with their validity masks."""
    q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, BLOCK_D)
    return tl.program_id(1) // heads, tl.program_id(1) % heads, q, q < Q, d, d < Dh


@triton.jit
def _level_geometry(shapes_ptr, starts_ptr, level, b, S):
    """Height and width of one level and the flat row of its first value token in sample ``b``."""
    height = tl.load(shapes_ptr + 2 * level).to(tl.int32)
    width = tl.load(shapes_ptr + 2 * level + 1).to(tl.int32)
    return height, width, b * S + tl.load(starts_ptr + level).to(tl.int32)


@triton.jit
def _corner(value_ptr, row_base, xi, yi, width, height, h, heads, d, d_mask, q_mask, Dh: tl.constexpr):
    """Value rows at integer pixel (xi, yi) of one level, [BLOCK_Q, BLOCK_D], zero outside the map; their offsets;
    and the mask used."""
    valid = q_mask & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    token = row_base + yi * width + xi
    offsets = (token * heads + h) * Dh
    mask = valid[:, None] & d_mask[None, :]
    rows = tl.load(value_ptr + offsets[:, None] + d[None, :], mask=mask, other=0.0)
    return rows, offsets, mask


@triton.jit
def _sample_position(loc_ptr, attn_ptr, point, q_mask, width, height):
    """Attention weight, the corner's integer pixel and the fractional position of one sampling point per query."""
    a = tl.load(attn_ptr + point, mask=q_mask, other=0.0)
    x = tl.load(loc_ptr + point * 2, mask=q_mask, other=0.0) * width - 0.5
    y = tl.load(loc_ptr + point * 2 + 1, mask=q_mask, other=0.0) * height - 0.5
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return a, x0f.to(tl.int32), y0f.to(tl.int32), x - x0f, y - y0f


@triton.jit
def _msda_forward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, S, Q, heads, L, P,
                         Dh: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    b, h, q, q_mask, d, d_mask = _program_tile(Q, heads, Dh, BLOCK, BLOCK_D)
    acc = tl.zeros((BLOCK, BLOCK_D), dtype=value_ptr.dtype.element_ty)
    for level in range(L):
        height, width, row_base = _level_geometry(shapes_ptr, starts_ptr, level, b, S)
        for p in range(P):
            point = (((b * Q + q) * heads + h) * L + level) * P + p
            a, x0, y0, fx, fy = _sample_position(loc_ptr, attn_ptr, point, q_mask, width, height)
            v00, _, _ = _corner(value_ptr, row_base, x0, y0, width, height, h, heads, d, d_mask, q_mask, Dh)
            v10, _, _ = _corner(value_ptr, row_base, x0 + 1, y0, width, height, h, heads, d, d_mask, q_mask, Dh)
            v01, _, _ = _corner(value_ptr, row_base, x0, y0 + 1, width, height, h, heads, d, d_mask, q_mask, Dh)
            v11, _, _ = _corner(value_ptr, row_base, x0 + 1, y0 + 1, width, height, h, heads, d, d_mask, q_mask, Dh)
            sampled = (((1 - fx) * (1 - fy))[:, None] * v00 + (fx * (1 - fy))[:, None] * v10
                       + ((1 - fx) * fy)[:, None] * v01 + (fx * fy)[:, None] * v11)
            acc += a[:, None] * sampled
    out_offsets = ((b * Q + q) * heads + h) * Dh
    tl.store(out_ptr + out_offsets[:, None] + d[None, :], acc, mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _msda_backward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr, grad_value_ptr,
                          grad_loc_ptr, grad_attn_ptr, S, Q, heads, L, P,
                          Dh: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    b, h, q, q_mask, d, d_mask = _program_tile(Q, heads, Dh, BLOCK, BLOCK_D)
    out_offsets = ((b * Q + q) * heads + h) * Dh
    grad_out = tl.load(grad_out_ptr + out_offsets[:, None] + d[None, :], mask=q_mask[:, None] & d_mask[None, :],
                       other=0.0)
    for level in range(L):
        height, width, row_base = _level_geometry(shapes_ptr, starts_ptr, level, b, S)
        for p in range(P):
            point = (((b * Q + q) * heads + h) * L + level) * P + p
            a, x0, y0, fx, fy = _sample_position(loc_ptr, attn_ptr, point, q_mask, width, height)
            v00, o00, m00 = _corner(value_ptr, row_base, x0, y0, width, height, h, heads, d, d_mask, q_mask, Dh)
            v10, o10, m10 = _corner(value_ptr, row_base, x0 + 1, y0, width, height, h, heads, d, d_mask, q_mask, Dh)
            v01, o01, m01 = _corner(value_ptr, row_base, x0, y0 + 1, width, height, h, heads, d, d_mask, q_mask, Dh)
            v11, o11, m11 = _corner(value_ptr, row_base, x0 + 1, y0 + 1, width, height, h, heads, d, d_mask, q_mask,
                                    Dh)
            # grad_out . corner value, per query: the sampled value is a bilinear mix of these four.
            g00 = tl.sum(grad_out * v00, axis=1)
            g10 = tl.sum(grad_out * v10, axis=1)
            g01 = tl.sum(grad_out * v01, axis=1)
            g11 = tl.sum(grad_out * v11, axis=1)
            w00 = (1 - fx) * (1 - fy)
            w10 = fx * (1 - fy)
            w01 = (1 - fx) * fy
            w11 = fx * fy
            tl.store(grad_attn_ptr + point, w00 * g00 + w10 * g10 + w01 * g01 + w11 * g11, mask=q_mask)
            grad_fx = (1 - fy) * (g10 - g00) + fy * (g11 - g01)
            grad_fy = (1 - fx) * (g01 - g00) + fx * (g11 - g10)
            tl.store(grad_loc_ptr + point * 2, a * width * grad_fx, mask=q_mask)
            tl.store(grad_loc_ptr + point * 2 + 1, a * height * grad_fy, mask=q_mask)
            tl.atomic_add(grad_value_ptr + o00[:, None] + d[None, :], (a * w00)[:, None] * grad_out, mask=m00)
            tl.atomic_add(grad_value_ptr + o10[:, None] + d[None, :], (a * w10)[:, None] * grad_out, mask=m10)
            tl.atomic_add(grad_value_ptr + o01[:, None] + d[None, :], (a * w01)[:, None] * grad_out, mask=m01)
            tl.atomic_add(grad_value_ptr + o11[:, None] + d[None, :], (a * w11)[:, None] * grad_out, mask=m11)


def _launch_grid(B, Q, heads):
    return triton.cdiv(Q, BLOCK_Q), B * heads


class _MSDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        B, S, heads, Dh = value.shape
        _, Q, _, L, P, _ = sampling_locations.shape
        out = torch.empty(B, Q, heads, Dh, dtype=value.dtype, device=value.device)
        _msda_forward_kernel[_launch_grid(B, Q, heads)](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out, S, Q, heads, L, P,
            Dh=Dh, BLOCK=BLOCK_Q, BLOCK_D=triton.next_power_of_2(Dh))
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return out.view(B, Q, heads * Dh)

    @staticmethod
    def backward(ctx, grad_out):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        B, S, heads, Dh = value.shape
        _, Q, _, L, P, _ = sampling_locations.shape
        grad_value = torch.zeros_like(value)
        grad_loc = torch.empty_like(sampling_locations)
        grad_attn = torch.empty_like(attention_weights)
        _msda_backward_kernel[_launch_grid(B, Q, heads)](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_out.contiguous(),
            grad_value, grad_loc, grad_attn, S, Q, heads, L, P,
            Dh=Dh, BLOCK=BLOCK_Q, BLOCK_D=triton.next_power_of_2(Dh))
        return grad_value, None, None, grad_loc, grad_attn


def multi_scale_deformable_attn_triton(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights):
    """The kernels behind ``multi_scale_deformable_attn`` (inputs already checked there). Half precision is
    computed in float32 and returned in the input dtype."""
    dtype = value.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    out = _MSDAFunction.apply(value.to(compute).contiguous(), spatial_shapes.to(torch.int64).contiguous(),
                              level_start_index.to(torch.int64).contiguous(),
                              sampling_locations.to(compute).contiguous(), attention_weights.to(compute).contiguous())
    return out.to(dtype)
