from .base import BaseTransform
from .depth_lss import DepthLSSTransform
from .lss import LSSTransform

__all__ = ["BaseTransform", "DepthLSSTransform", "LSSTransform"]
