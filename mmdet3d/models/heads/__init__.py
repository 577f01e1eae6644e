from .centerpoint import CenterHead, CenterTargets, SeparateHead, clip_sigmoid

__all__ = ["CenterHead", "CenterTargets", "SeparateHead", "clip_sigmoid"]
