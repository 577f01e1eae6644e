from .bevfusion import BEVFusion
from .gcm import BEVDeformableAttention
from .simdistill import SimDistill

__all__ = ["BEVFusion", "BEVDeformableAttention", "SimDistill"]
