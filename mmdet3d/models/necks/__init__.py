from .generalized_lss import GeneralizedLSSFPN
from .lss import LSSFPN

__all__ = ["GeneralizedLSSFPN", "LSSFPN"]
