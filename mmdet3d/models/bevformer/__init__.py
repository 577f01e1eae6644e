"""The BEVFormer encoder for the BEVFormer SimDistill student (VARIANTS.md Part B)."""
from .encoder import BEVFormerEncoder, BEVFormerLayer, LearnedPositionalEncoding
from .geometry import align_prev_bev, frame_motion, lidar2img, pillar_anchors, project_to_cameras, warp_bev

__all__ = ["BEVFormerEncoder", "BEVFormerLayer", "LearnedPositionalEncoding", "align_prev_bev", "frame_motion",
           "lidar2img", "pillar_anchors", "project_to_cameras", "warp_bev"]
