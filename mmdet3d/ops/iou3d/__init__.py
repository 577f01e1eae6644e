"""Rotated BEV box IoU and NMS."""
from .iou3d import bev_corners, box_iou_bev, circle_nms, nms_bev

__all__ = ["bev_corners", "box_iou_bev", "circle_nms", "nms_bev"]
