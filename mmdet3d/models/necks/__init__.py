from .fpn import FPN
from .generalized_lss import GeneralizedLSSFPN
from .lss import LSSFPN

__all__ = ["FPN", "GeneralizedLSSFPN", "LSSFPN"]
