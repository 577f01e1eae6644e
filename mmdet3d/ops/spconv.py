"""Sparse convolution layers from spconv 2.x, with workarounds for two CPU defects of spconv 2.3.8.

1. The backward pass of sparse convolutions asks ``torch.cuda.current_stream()`` for a stream even for CPU tensors
   and raises "Found no NVIDIA driver" without a GPU. ``get_current_stream`` (looked up in ``spconv.pytorch.ops``
   and ``spconv.pytorch.cppcore``) returns stream 0 here when CUDA is unavailable; spconv ignores the stream on CPU.
2. With more than one intra-op thread, its CPU kernels intermittently return wrong results (errors of 0.05-0.7
   against a dense ``conv3d``, in most runs for float64). Every spconv op called with CPU tensors therefore runs
   with ``torch.set_num_threads(1)``, and the previous thread count is restored afterwards.

Both patches are applied when this module is imported; on GPU they change nothing. Import the layers from here::

    from mmdet3d.ops.spconv import SparseConv3d, SparseConvTensor, SparseSequential, SubMConv3d
"""
import functools
import logging
import warnings

import torch

try:
    from spconv.pytorch import SparseConv3d, SparseConvTensor, SparseSequential, SubMConv3d
    from spconv.pytorch import cppcore as _spconv_cppcore
    from spconv.pytorch import ops as _spconv_ops
except ImportError as error:
    raise ImportError(
        "mmdet3d.ops.spconv needs spconv 2.x (sparse convolutions of the LiDAR encoder): install "
        "`pip install spconv` for CPU or the build matching your CUDA, e.g. `pip install spconv-cu126` "
        "(see https://github.com/traveller59/spconv)") from error

__all__ = ["SparseConv3d", "SparseConvTensor", "SparseSequential", "SubMConv3d"]

# spconv's dense() indexes with a list, deprecated since torch 2.9; the warning fires every step and is not ours.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        module="spconv")


class _DropMessage(logging.Filter):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


# SparseConvTensor's constructor asks torch.fx whether it is being traced, and torch >= 2.10 answers with a log
# warning about that API (once per process, on the first training step); it concerns spconv's code, not ours.
logging.getLogger("torch.fx._symbolic_trace").addFilter(_DropMessage("is_fx_tracing will return true"))

# spconv ops that compute on feature or index tensors (rule generation, convolution, pooling and their backward).
_THREAD_SENSITIVE_OPS = (
    "get_indice_pairs", "get_indice_pairs_implicit_gemm", "indice_conv", "indice_conv_backward", "implicit_gemm",
    "implicit_gemm_backward", "indice_maxpool", "indice_maxpool_backward", "indice_maxpool_implicit_gemm",
    "indice_maxpool_implicit_gemm_backward", "indice_avgpool_implicit_gemm",
    "indice_avgpool_implicit_gemm_backward",
)


def _cpu_safe_stream(get_current_stream):
    @functools.wraps(get_current_stream)
    def wrapper():
        return get_current_stream() if torch.cuda.is_available() else 0
    wrapper.mmdet3d_shim = True
    return wrapper


def _single_threaded_on_cpu(op):
    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None or first.is_cuda:
            return op(*args, **kwargs)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return op(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    wrapper.mmdet3d_shim = True
    return wrapper


def _apply_once(module, name, make_wrapper):
    original = getattr(module, name)
    if not getattr(original, "mmdet3d_shim", False):
        setattr(module, name, make_wrapper(original))


for _module in (_spconv_ops, _spconv_cppcore):
    _apply_once(_module, "get_current_stream", _cpu_safe_stream)
for _name in _THREAD_SENSITIVE_OPS:
    _apply_once(_spconv_ops, _name, _single_threaded_on_cpu)
