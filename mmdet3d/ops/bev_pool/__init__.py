"""BEV pooling of lift-splat view transforms."""
from .bev_pool import BEVPoolPlan, bev_pool, bev_pool_depth

__all__ = ["BEVPoolPlan", "bev_pool", "bev_pool_depth"]
