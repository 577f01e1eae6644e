"""Chooses between the compiled CUDA kernels (``mmdet3d._ext``) and the pure-PyTorch reference paths."""
import functools
import importlib
import os

FORCE_REFERENCE_ENV = "MMDET3D_FORCE_REFERENCE_OPS"


@functools.lru_cache(maxsize=None)
def load_extension():
    """The compiled extension module, or None when the package was installed without it."""
    try:
        return importlib.import_module("mmdet3d._ext")
    except (ImportError, OSError):  # built without CUDA, or its runtime libraries cannot be loaded here
        return None


def cuda_kernels(*tensors):
    """The extension module if every tensor is on a CUDA device, the extension imports and
    ``MMDET3D_FORCE_REFERENCE_OPS`` is not ``1``; otherwise None (use the PyTorch path)."""
    if os.environ.get(FORCE_REFERENCE_ENV, "0") == "1":
        return None
    if not tensors or not all(t.is_cuda for t in tensors):
        return None
    return load_extension()
