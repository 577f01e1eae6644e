from .gaussian_focal_loss import GaussianFocalLoss, gaussian_focal_loss
from .l1_loss import L1Loss
from .utils import weight_reduce_loss

__all__ = ["GaussianFocalLoss", "gaussian_focal_loss", "L1Loss", "weight_reduce_loss"]
