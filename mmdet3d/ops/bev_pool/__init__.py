"""BEV pooling of lift-splat view transforms."""
from .bev_pool import CELL_RULES, BEVPoolPlan, bev_cells, bev_pool, bev_pool_depth

__all__ = ["CELL_RULES", "BEVPoolPlan", "bev_cells", "bev_pool", "bev_pool_depth"]
