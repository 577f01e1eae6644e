"""Multi-scale deformable attention (Deformable-DETR semantics)."""
from .msda import multi_scale_deformable_attn

__all__ = ["multi_scale_deformable_attn"]
