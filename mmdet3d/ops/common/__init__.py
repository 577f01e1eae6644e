"""Shared plumbing of the ops: loading the CUDA extension and choosing between it and the PyTorch paths."""
from .dispatch import FORCE_REFERENCE_ENV, cuda_kernels, load_extension

__all__ = ["FORCE_REFERENCE_ENV", "cuda_kernels", "load_extension"]
