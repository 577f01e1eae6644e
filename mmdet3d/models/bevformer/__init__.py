"""The BEVFormer encoder for the BEVFormer SimDistill student (VARIANTS.md Part B)."""
from .checkpoint import convert_bevformer_state, load_bevformer_weights
from .encoder import BEVFormerEncoder, BEVFormerLayer, LearnedPositionalEncoding
from .geometry import align_prev_bev, frame_motion, lidar2img, pillar_anchors, project_to_cameras, warp_bev

__all__ = ["BEVFormerEncoder", "BEVFormerLayer", "LearnedPositionalEncoding", "align_prev_bev",
           "convert_bevformer_state", "frame_motion", "lidar2img", "load_bevformer_weights", "pillar_anchors",
           "project_to_cameras", "warp_bev"]
