from .base import BaseTransform
from .depth_lss import DepthLSSTransform
from .lss import LSSTransform
from .oracle_depth import OracleDepthLSSTransform

__all__ = ["BaseTransform", "DepthLSSTransform", "LSSTransform", "OracleDepthLSSTransform"]
